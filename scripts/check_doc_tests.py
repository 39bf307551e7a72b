#!/usr/bin/env python3
"""Every test a document names exists: docs/security.md and tests/e2e/README.md cite the tests
that prove each claim, and a renamed or deleted test must not leave a claim without its proof.

A cited test is a backticked `test_…` name, or a backticked snake_case name of five or more
words that is not a configuration key or metric the README or another docs page documents.
And every deny reason of crates/core/src/decision.rs has its row in docs/troubleshooting.md, in
the table's order, so a new reason cannot ship without saying what the client sees and what to
do. Exits 1 naming the missing ones."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/security.md", "tests/e2e/README.md")
IDENT = re.compile(r"`([a-z][a-z0-9_]*)(?:\[[^`\]]*\])?`")


def defined_tests() -> set[str]:
    names: set[str] = set()
    for path in list(ROOT.glob("src/**/*.rs")) + list(ROOT.glob("crates/**/*.rs")) + list(ROOT.glob("tests/**/*.rs")):
        names.update(re.findall(r"\bfn\s+([a-z0-9_]+)\s*[(<]", path.read_text()))
    for path in ROOT.glob("tests/**/*.py"):
        names.update(re.findall(r"^\s*(?:async\s+)?def\s+([a-z0-9_]+)\s*\(", path.read_text(), re.M))
    return names


def documented() -> str:
    """The README and the docs pages that do not cite tests: where keys and metrics are named."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(p.read_text() for p in pages if p.relative_to(ROOT).as_posix() not in DOCS)


def cited(doc: str, reference: str) -> set[str]:
    out = set()
    for name in IDENT.findall(doc):
        if name.startswith("test_") or (name.count("_") >= 4 and f"`{name}`" not in reference):
            out.add(name)
    return out


def troubleshooting_gaps() -> list[str]:
    """Deny reasons (the `deny_reasons!` rows: `Variant = "label", Status, ...`) against the
    first column of docs/troubleshooting.md's "Every deny reason" table."""
    reasons = re.findall(r'^\s*[A-Z]\w* = "([a-z_]+)", [A-Z]', (ROOT / "crates/core/src/decision.rs").read_text(), re.M)
    page = (ROOT / "docs/troubleshooting.md").read_text().split("## Every deny reason", 1)[-1]
    rows = re.findall(r"^\| `([a-z_]+)` \|", page, re.M)
    if not reasons:
        return ["crates/core/src/decision.rs: no deny reasons found (has the table's shape changed?)"]
    gaps = [f"docs/troubleshooting.md: no row for `{r}`" for r in reasons if r not in rows]
    gaps += [f"docs/troubleshooting.md: `{r}` is not a deny reason" for r in rows if r not in reasons]
    if not gaps and rows != reasons:
        gaps.append("docs/troubleshooting.md: rows not in decision.rs's order")
    return gaps


def main() -> int:
    gaps = troubleshooting_gaps()
    if gaps:
        print("deny reasons the troubleshooting page does not match:\n  " + "\n  ".join(gaps))
        return 1
    tests = defined_tests()
    reference = documented()
    missing = []
    total = 0
    for doc in DOCS:
        names = cited((ROOT / doc).read_text(), reference)
        total += len(names)
        missing += [f"{doc}: `{n}`" for n in sorted(names - tests)]
    if missing:
        print("tests cited in the docs that do not exist:\n  " + "\n  ".join(missing))
        return 1
    print(f"ok: the {total} tests the docs cite exist, and every deny reason has its troubleshooting row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
