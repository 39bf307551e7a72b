"""Tables, target ratios and the latency plot from one scripts/bench.sh run.

Usage: bench_report.py RESULTS_DIR PNG_PATH  (RESULTS_DIR is target/bench)
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENVOY = [
    ("noauth", "no auth"),
    ("jwt_authn", "Envoy jwt_authn (local JWKS)"),
    ("ext_authz_allow", "ext_authz → always-allow server"),
    ("ext_authz_certbound", "ext_authz → certbound (bound token + cert)"),
    ("module", "certbound inside Envoy (dynamic module, same config)"),
]
PCTS = ["50", "75", "90", "95", "99", "99.9"]


def load(d: Path, name: str) -> dict:
    return json.loads((d / f"{name}.json").read_text())


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    d, png = Path(sys.argv[1]), Path(sys.argv[2])
    env = {k: load(d, f"envoy-{k}") for k, _ in ENVOY}
    g_allow, g_cb = load(d, "grpc-allow"), load(d, "grpc-certbound")
    mem_idle, mem_load, mem_100k = load(d, "memory-idle"), load(d, "memory-load"), load(d, "memory-100k")

    print("### Through Envoy (wrk, 16 connections; p50 at 1 connection)\n")
    print("| configuration | req/s | × no auth | × trivial ext_authz | p50 | p99 | p99.9 | p50 at 1 conn | authz CPU/req | Envoy CPU/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base, hop = env["noauth"]["rps"], env["ext_authz_allow"]["rps"]
    for k, label in ENVOY:
        r = env[k]
        p, p1 = r["percentiles_us"], r["c1_percentiles_us"]
        cpu = f'{r["authz_cpu_us_per_req"]:.1f} µs' if r["authz_cpu_us_per_req"] else "—"
        print(f'| {label} | {r["rps"]:.0f} | {r["rps"] / base:.2f} | {r["rps"] / hop:.2f} | {p["50"]} µs | {p["99"]} µs '
              f'| {p["99.9"]} µs | {p1["50"]} µs | {cpu} | {r["envoy_cpu_us_per_req"]:.1f} µs |')
    for k, _ in ENVOY:
        if env[k]["errors"] or env[k]["non2xx"]:
            print(f'\n{k}: {env[k]["errors"]} socket errors, {env[k]["non2xx"]} non-2xx answers')

    print("\n### gRPC straight at the server (examples/loadgen, 64 streams over 4 connections)\n")
    print("| server | checks/s | p50 | p99 | p99.9 | server CPU/check | denied + errors |")
    print("|---|---|---|---|---|---|---|")
    for label, g in (("always-allow", g_allow), ("certbound", g_cb)):
        print(f'| {label} | {g["checks_per_s"]:.0f} | {g["p50_us"]} µs | {g["p99_us"]} µs | {g["p999_us"]} µs '
              f'| {g["server_cpu_us_per_check"]:.1f} µs | {g["denied"] + g["errors"]} |')

    print("\n### Memory (certbound RSS)\n")
    print("| state | RSS |")
    print("|---|---|")
    print(f'| idle, 1 000-token world | {mem_idle["rss_idle_kib"] / 1024:.1f} MiB |')
    print(f'| right after the gRPC and Envoy load | {mem_load["rss_after_load_kib"] / 1024:.1f} MiB |')
    print(f'| idle, 100k world | {mem_100k["rss_idle_kib"] / 1024:.1f} MiB |')
    print(f'| holding {mem_100k["token_misses"]} distinct verified tokens | {mem_100k["rss_100k_tokens_kib"] / 1024:.1f} MiB |')

    cb, allow = env["ext_authz_certbound"], env["ext_authz_allow"]
    added = lambda r: r["c1_percentiles_us"]["50"] - env["noauth"]["c1_percentiles_us"]["50"]  # noqa: E731
    module = env["module"]
    rows = [
        ("in-process req/s, module ÷ no auth ≥ 0.85", module["rps"] / env["noauth"]["rps"],
         module["rps"] / env["noauth"]["rps"] >= 0.85),
        ("in-process Envoy CPU per request, module − no auth ≤ 5 µs",
         module["envoy_cpu_us_per_req"] - env["noauth"]["envoy_cpu_us_per_req"],
         module["envoy_cpu_us_per_req"] - env["noauth"]["envoy_cpu_us_per_req"] <= 5),
        ("Envoy req/s, certbound ÷ always-allow ≥ 0.95", cb["rps"] / allow["rps"], cb["rps"] / allow["rps"] >= 0.95),
        ("authz CPU per check, certbound ÷ always-allow ≤ 1.2",
         cb["authz_cpu_us_per_req"] / allow["authz_cpu_us_per_req"],
         cb["authz_cpu_us_per_req"] / allow["authz_cpu_us_per_req"] <= 1.2),
        ("added p50 at 1 connection, certbound ÷ always-allow ≤ 1.1",
         added(cb) / max(1, added(allow)), added(cb) / max(1, added(allow)) <= 1.1),
        ("gRPC checks/s, certbound ÷ always-allow ≥ 0.9", g_cb["checks_per_s"] / g_allow["checks_per_s"],
         g_cb["checks_per_s"] / g_allow["checks_per_s"] >= 0.9),
        ("RSS with 100k cached tokens ≤ 64 MiB", mem_100k["rss_100k_tokens_kib"] / 1024,
         mem_100k["rss_100k_tokens_kib"] <= 64 * 1024),
    ]
    print("\n### Targets\n")
    print("| target | measured | |")
    print("|---|---|---|")
    for name, value, ok in rows:
        print(f"| {name} | {value:.2f} | {verdict(ok)} |")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = range(len(PCTS))
    for k, label in ENVOY:
        ax.plot(xs, [env[k]["percentiles_us"][p] / 1000 for p in PCTS], marker="o", label=label)
    ax.set_xticks(list(xs), [f"p{p}" for p in PCTS])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Envoy --concurrency 1, wrk 16 connections (2-core VM)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\n(plot: {png})", file=sys.stderr)


if __name__ == "__main__":
    main()
