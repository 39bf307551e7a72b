"""The in-process table of docs/benchmarks.md from the last `cargo bench --bench pipeline` run.

Usage: python3 scripts/criterion_table.py [target/criterion]

Reads criterion's median estimate of every case (one group per token algorithm and header
format) and prints the cold and warm checks next to their floors, with the two target ratios:
cold ÷ (token verify + chain verify + header decode + SHA-256), warm ÷ bare cache hits.
"""
import json
import sys
from pathlib import Path

ORDER = ["rs256_url_encoded", "es256_url_encoded"]


def median_us(d: Path, group: str, case: str) -> float:
    est = json.loads((d / group / case / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"] / 1000


def fmt(us: float) -> str:
    return f"{us:.0f} µs" if us >= 100 else f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def main() -> None:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    groups = [g.name for g in d.iterdir() if (g / "cold").is_dir()]
    groups.sort(key=lambda g: (ORDER.index(g) if g in ORDER else len(ORDER), g))
    print("| case | cold | warm | token verify | chain verify | header decode | SHA-256 "
          "| cold ÷ sum of floor | bare cache hits | warm ÷ cache hits |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in groups:
        m = {c: median_us(d, g, c) for c in
             ["cold", "warm", "floor_token_verify", "floor_chain_verify", "floor_header_decode",
              "floor_sha256", "floor_cache_hits"]}
        floor = (m["floor_token_verify"] + m["floor_chain_verify"] + m["floor_header_decode"]
                 + m["floor_sha256"])
        name = g.replace("_", "/", 1)
        print(f"| {name} | {fmt(m['cold'])} | {fmt(m['warm'])} | {fmt(m['floor_token_verify'])} "
              f"| {fmt(m['floor_chain_verify'])} | {fmt(m['floor_header_decode'])} "
              f"| {fmt(m['floor_sha256'])} | {m['cold'] / floor:.2f} | {fmt(m['floor_cache_hits'])} "
              f"| {m['warm'] / m['floor_cache_hits']:.2f} |")


if __name__ == "__main__":
    main()
