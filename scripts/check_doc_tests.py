#!/usr/bin/env python3
"""Every test a document names exists: docs/security.md and tests/e2e/README.md cite the tests
that prove each claim, and a renamed or deleted test must not leave a claim without its proof.

A cited test is a backticked `test_…` name, or a backticked snake_case name of five or more
words that is not a configuration key or metric the README or another docs page documents.
Exits 1 naming the missing ones."""
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


def main() -> int:
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
    print(f"ok: the {total} tests the docs cite exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
