"""Tables, target ratios and the latency plot from one scripts/bench.sh run.

Usage: bench_report.py RESULTS_DIR PNG_PATH  (RESULTS_DIR is target/bench)

The Envoy configurations run in interleaved rounds. Every ratio is computed within a round (each
configuration against the no-auth or plain ext_authz run of the same round) and reported as the
median over the rounds with the lowest and highest round in brackets; absolute numbers likewise.
A target is met when the median meets it.
"""
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ENVOY = [
    ("noauth", "no auth"),
    ("jwt_authn", "Envoy jwt_authn RS256 with its JWT cache (local JWKS)"),
    ("ext_authz_plain", "ext_authz → plain tonic always-allow server (default settings)"),
    ("ext_authz_allow", "ext_authz → always-allow server with certbound's server settings"),
    ("ext_authz_certbound", "ext_authz → certbound (bound token + cert)"),
    ("ext_authz_certbound_lean", "ext_authz → certbound, `dynamic_metadata = []`"),
    ("module", "certbound inside Envoy (dynamic module, same config)"),
    ("module_lean", "certbound inside Envoy, `dynamic_metadata = []`"),
]
PCTS = ["50", "75", "90", "95", "99", "99.9"]


def load(d: Path, name: str) -> dict:
    return json.loads((d / f"{name}.json").read_text())


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def spread(values: list, unit: str = "", digits: int = 2) -> str:
    """The median, with the lowest and highest value when there is more than one."""
    f = lambda v: f"{v:.{digits}f}"  # noqa: E731
    if len(values) == 1 or f(min(values)) == f(max(values)):
        return f(values[0]) + unit
    return f"{f(statistics.median(values))}{unit} ({f(min(values))}–{f(max(values))})"


def ratio(a: float, b: float) -> float:
    """a ÷ b, or NaN (never met) when b is zero: a run too short to be measured."""
    return a / b if b else float("nan")


def criterion_floor_us(d: Path) -> float | None:
    """criterion's ES256 token-verification floor, when `cargo bench --bench pipeline` has run."""
    est = d.parent / "criterion" / "es256_url_encoded" / "floor_token_verify" / "new" / "estimates.json"
    if not est.is_file():
        return None
    return json.loads(est.read_text())["median"]["point_estimate"] / 1000


def main() -> None:
    d, png = Path(sys.argv[1]), Path(sys.argv[2])
    rounds = sorted({json.loads(p.read_text())["round"] for p in d.glob("envoy-noauth-r*.json")})
    env = {k: [load(d, f"envoy-{k}-r{r}") for r in rounds] for k, _ in ENVOY}
    g_plain, g_allow, g_cb = load(d, "grpc-plain"), load(d, "grpc-allow"), load(d, "grpc-certbound")
    mem_idle, mem_load, mem_100k = load(d, "memory-idle"), load(d, "memory-load"), load(d, "memory-100k")
    mod_100k, floor = load(d, "module-100k"), load(d, "floor")

    def per_round(f) -> list:
        """f(run of each configuration in one round) for every round."""
        return [f({k: env[k][i] for k in env}) for i in range(len(rounds))]

    def col(k: str, field: str) -> list:
        return [r[field] for r in env[k]]

    n = len(rounds)
    print(f"### Through Envoy ({n} interleaved round{'s' * (n > 1)}; wrk 16 connections; p50 at 1 connection)\n")
    print("Median over the rounds (lowest–highest round); ratios are taken within each round.\n")
    print("| configuration | req/s | × no auth | × plain ext_authz | p50 | p99 | p99.9 | p50 at 1 conn "
          "| authz CPU/req | Envoy CPU/req |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, label in ENVOY:
        p = lambda q: f'{statistics.median(r["percentiles_us"][q] for r in env[k]):.0f} µs'  # noqa: E731
        c1 = f'{statistics.median(r["c1_percentiles_us"]["50"] for r in env[k]):.0f} µs'
        authz = col(k, "authz_cpu_us_per_req")
        cpu = "—" if None in authz else spread(authz, " µs", 1)
        print(f'| {label} | {spread(col(k, "rps"), "", 0)} '
              f'| {spread(per_round(lambda e: ratio(e[k]["rps"], e["noauth"]["rps"])))} '
              f'| {spread(per_round(lambda e: ratio(e[k]["rps"], e["ext_authz_plain"]["rps"])))} '
              f'| {p("50")} | {p("99")} | {p("99.9")} | {c1} | {cpu} '
              f'| {spread(col(k, "envoy_cpu_us_per_req"), " µs", 1)} |')
    for k, _ in ENVOY:
        for r in env[k]:
            if r["errors"] or r["non2xx"]:
                print(f'\n{k}, round {r["round"]}: {r["errors"]} socket errors, {r["non2xx"]} non-2xx answers')

    print("\n### gRPC straight at the server (tools/loadgen, 64 streams over 4 connections)\n")
    print("| server | checks/s | p50 | p99 | p99.9 | server CPU/check | denied + errors |")
    print("|---|---|---|---|---|---|---|")
    for label, g in (("plain tonic always-allow (default settings)", g_plain),
                     ("always-allow, certbound's server settings", g_allow), ("certbound", g_cb)):
        print(f'| {label} | {g["checks_per_s"]:.0f} | {g["p50_us"]} µs | {g["p99_us"]} µs | {g["p999_us"]} µs '
              f'| {g["server_cpu_us_per_check"]:.1f} µs | {g["denied"] + g["errors"]} |')

    # Cold: every one of the 100 000 tokens is new to the cache it reaches.
    module_added = per_round(lambda e: e["module"]["envoy_cpu_us_per_req"] - e["noauth"]["envoy_cpu_us_per_req"])
    cold_ext = mem_100k["cpu_us_per_check"]
    cold_mod = mod_100k["envoy_cpu_us_per_req"] - mod_100k["noauth_envoy_cpu_us_per_req"]
    warm_ext = g_cb["server_cpu_us_per_check"]
    warm_mod = statistics.median(module_added)
    fl = floor["verify_us"]
    print(f'\n### Cold checks: 100 000 distinct {floor["alg"]} tokens, each sent once\n')
    print(f'Token verification floor on this machine, same run: {fl:.1f} µs of CPU '
          f'(median of {floor["passes"]} passes over {floor["tokens"]} tokens, '
          f'{floor["verify_us_min"]:.1f}–{floor["verify_us_max"]:.1f} µs).')
    crit = criterion_floor_us(d)
    if crit is not None:
        print(f"criterion's `es256/url_encoded/floor/token_verify` (last `cargo bench` run): {crit:.1f} µs.")
    print("\n| face | cold check | warm check | cold ÷ floor | (cold − warm) ÷ floor |")
    print("|---|---|---|---|---|")
    print(f"| ext_authz (certbound's CPU per check, gRPC straight) | {cold_ext:.1f} µs | {warm_ext:.1f} µs "
          f"| {cold_ext / fl:.2f} | {(cold_ext - warm_ext) / fl:.2f} |")
    print(f"| module (Envoy CPU per request − no auth's, same requests) | {cold_mod:.1f} µs | {warm_mod:.1f} µs "
          f"| {cold_mod / fl:.2f} | {(cold_mod - warm_mod) / fl:.2f} |")
    print(f'\nThe module\'s run took {mod_100k["seconds"]:.1f} s (Envoy {mod_100k["envoy_cpu_us_per_req"]:.1f} µs '
          f'per request), no auth\'s {mod_100k["noauth_seconds"]:.1f} s '
          f'({mod_100k["noauth_envoy_cpu_us_per_req"]:.1f} µs per request).')
    if mem_100k["denied"] or mem_100k["errors"]:
        print(f'\next_authz fill: {mem_100k["denied"]} denied, {mem_100k["errors"]} errors')
    if mod_100k["non2xx"] or mod_100k["errors"] or mod_100k["allowed"] != mod_100k["requests"]:
        print(f'\nmodule fill: {mod_100k["requests"]} answers, {mod_100k["non2xx"]} non-2xx, '
              f'{mod_100k["errors"]} errors, {mod_100k["allowed"]} allowed by the module')

    print("\n### Memory\n")
    print("| process, state | RSS |")
    print("|---|---|")
    print(f'| certbound, idle, 1 000-token world | {mem_idle["rss_idle_kib"] / 1024:.1f} MiB |')
    print(f'| certbound, right after the gRPC and Envoy load | {mem_load["rss_after_load_kib"] / 1024:.1f} MiB |')
    print(f'| certbound, idle, 100k world | {mem_100k["rss_idle_kib"] / 1024:.1f} MiB |')
    print(f'| certbound, holding {mem_100k["token_misses"]} distinct verified tokens '
          f'| {mem_100k["rss_100k_tokens_kib"] / 1024:.1f} MiB |')
    print(f'| Envoy with the module, 100k world, before any request | {mod_100k["rss_idle_kib"] / 1024:.1f} MiB |')
    print(f'| Envoy with the module, after {mod_100k["allowed"]} distinct tokens '
          f'| {mod_100k["rss_100k_tokens_kib"] / 1024:.1f} MiB |')
    module_mib = (mod_100k["rss_100k_tokens_kib"] - mod_100k["rss_idle_kib"]) / 1024

    cb_plain = lambda f: per_round(lambda e: ratio(f(e["ext_authz_certbound"]), f(e["ext_authz_plain"])))  # noqa: E731
    rows = [
        ("in-process req/s, module ÷ no auth ≥ 0.85 (stretch 0.9)",
         per_round(lambda e: ratio(e["module"]["rps"], e["noauth"]["rps"])), lambda v: v >= 0.85, ""),
        ("in-process Envoy CPU per request, module − no auth ≤ 5 µs", module_added, lambda v: v <= 5, " µs"),
        ("(next to it) Envoy CPU per request, jwt_authn − no auth",
         per_round(lambda e: e["jwt_authn"]["envoy_cpu_us_per_req"] - e["noauth"]["envoy_cpu_us_per_req"]),
         None, " µs"),
        ("ext_authz req/s, certbound ÷ plain always-allow ≥ 0.95", cb_plain(lambda r: r["rps"]),
         lambda v: v >= 0.95, ""),
        ("authz CPU per check, certbound ÷ plain always-allow ≤ 1.2", cb_plain(lambda r: r["authz_cpu_us_per_req"]),
         lambda v: v <= 1.2, ""),
        ("Envoy CPU per request, certbound ÷ plain always-allow ≤ 1.05",
         cb_plain(lambda r: r["envoy_cpu_us_per_req"]), lambda v: v <= 1.05, ""),
        ("(next to it) ext_authz req/s, certbound ÷ plain, `dynamic_metadata = []`",
         per_round(lambda e: ratio(e["ext_authz_certbound_lean"]["rps"], e["ext_authz_plain"]["rps"])), None, ""),
        ("(next to it) authz CPU per check ÷ plain, `dynamic_metadata = []`",
         per_round(lambda e: ratio(e["ext_authz_certbound_lean"]["authz_cpu_us_per_req"],
                                   e["ext_authz_plain"]["authz_cpu_us_per_req"])), None, ""),
        ("(next to it) Envoy CPU per request ÷ plain, `dynamic_metadata = []`",
         per_round(lambda e: ratio(e["ext_authz_certbound_lean"]["envoy_cpu_us_per_req"],
                                   e["ext_authz_plain"]["envoy_cpu_us_per_req"])), None, ""),
        ("(next to it) module req/s ÷ no auth, `dynamic_metadata = []`",
         per_round(lambda e: ratio(e["module_lean"]["rps"], e["noauth"]["rps"])), None, ""),
        ("(next to it) module Envoy CPU per request − no auth, `dynamic_metadata = []`",
         per_round(lambda e: e["module_lean"]["envoy_cpu_us_per_req"] - e["noauth"]["envoy_cpu_us_per_req"]),
         None, " µs"),
        ("module's resident size with 100 000 cached tokens (Envoy RSS after − before)", [module_mib], None,
         " MiB"),
        ("cold check ÷ token verification floor ≤ 1.2, ext_authz", [cold_ext / fl], lambda v: v <= 1.2, ""),
        ("cold check ÷ token verification floor ≤ 1.2, module", [cold_mod / fl], lambda v: v <= 1.2, ""),
    ]
    print("\n### Targets (issue 14)\n")
    print("| target | measured: median (lowest–highest round) | |")
    print("|---|---|---|")
    for name, values, ok, unit in rows:
        mark = "reported" if ok is None else verdict(ok(statistics.median(values)))
        print(f"| {name} | {spread(values, unit, 1 if unit else 2)} | {mark} |")

    added = lambda e, k: e[k]["c1_percentiles_us"]["50"] - e["noauth"]["c1_percentiles_us"]["50"]  # noqa: E731
    cb_allow = lambda f: per_round(lambda e: ratio(f(e["ext_authz_certbound"]), f(e["ext_authz_allow"])))  # noqa: E731
    old = [
        ("Envoy req/s, certbound ÷ always-allow ≥ 0.95", cb_allow(lambda r: r["rps"]), lambda v: v >= 0.95),
        ("authz CPU per check, certbound ÷ always-allow ≤ 1.2", cb_allow(lambda r: r["authz_cpu_us_per_req"]),
         lambda v: v <= 1.2),
        ("added p50 at 1 connection, certbound ÷ always-allow ≤ 1.1",
         per_round(lambda e: added(e, "ext_authz_certbound") / max(1, added(e, "ext_authz_allow"))),
         lambda v: v <= 1.1),
        ("gRPC checks/s, certbound ÷ always-allow ≥ 0.9", [ratio(g_cb["checks_per_s"], g_allow["checks_per_s"])],
         lambda v: v >= 0.9),
        ("RSS with 100k cached tokens ≤ 64 MiB", [mem_100k["rss_100k_tokens_kib"] / 1024], lambda v: v <= 64),
    ]
    print("\n### Targets (issue 6; always-allow = tools/allow_server, certbound's server settings)\n")
    print("| target | measured | |")
    print("|---|---|---|")
    for name, values, ok in old:
        print(f"| {name} | {spread(values)} | {verdict(ok(statistics.median(values)))} |")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = range(len(PCTS))
    for k, label in ENVOY:
        ax.plot(xs, [statistics.median(r["percentiles_us"][p] for r in env[k]) / 1000 for p in PCTS],
                marker="o", label=label)
    ax.set_xticks(list(xs), [f"p{p}" for p in PCTS])
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"Envoy --concurrency 1, wrk 16 connections, median of {len(rounds)} rounds (2-core VM)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"\n(plot: {png})", file=sys.stderr)


if __name__ == "__main__":
    main()
