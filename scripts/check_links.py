#!/usr/bin/env python3
"""Every relative link in the repository's Markdown leads somewhere: the file or folder exists,
and an `#anchor` names a heading of the target page (GitHub's slugs: lower case, spaces to `-`,
punctuation dropped, a repeated heading gets `-1`, `-2`, ...) or an explicit `id`/`name`; and
every page in docs/ is linked from the README, so a newcomer can reach it.

Links inside code blocks and code spans are not links. External links (`https:`, `mailto:`) are
not fetched. Before checking, the script tests its own slug function and link finder on known
cases, so a regression in the checker cannot pass silently. Exits 1 naming each broken link as
`file:line: target (why)`.

    python3 scripts/check_links.py
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Generated, installed or third-party trees: not the project's documents.
SKIP_DIRS = {".git", "target", ".venv", "node_modules", ".work", "corpus", "artifacts"}

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target), with an optional "title"; the text may hold code spans.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<[a-z][^>]*\s(?:id|name)=\"([^\"]+)\"", re.I)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup removed, lower case, every character that is
    not a letter, digit, `_`, `-` or space dropped, then each space turned into `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def markdown_lines(text: str):
    """(line number, line) of the lines outside fenced code blocks, code spans blanked."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield number, CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line)


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: heading slugs (repeats numbered as GitHub does) and HTML ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fence = None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if m:
            fence = m.group(1) if fence is None else (None if m.group(1) == fence else fence)
            continue
        if fence is not None:
            continue
        out.update(HTML_ID.findall(line))
        h = HEADING.match(line)
        if h:
            base = slug(h.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str):
    """(line number, target) of every inline link and reference definition outside code."""
    for number, line in markdown_lines(text):
        for m in INLINE_LINK.finditer(line):
            yield number, m.group(1)
        m = REFERENCE_DEF.match(line)
        if m:
            yield number, m.group(1)


def documents(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(root).parts))


def broken_links(root: Path) -> tuple[list[str], int]:
    """Every broken relative link under root, as `file:line: target (why)`, and the count checked."""
    cache: dict[Path, set[str]] = {}
    problems, count = [], 0
    for doc in documents(root):
        text = doc.read_text()
        for number, target in links(text):
            if not target or re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # external (https:, mailto:) or empty
            count += 1
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            where = f"{doc.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
                continue
            if not anchor or dest.suffix != ".md":
                continue
            if dest not in cache:
                cache[dest] = anchors(dest.read_text())
            if anchor not in cache[dest]:
                problems.append(f"{where} (no heading with that anchor in {dest.relative_to(root)})")
    return problems, count


def unlinked_pages(root: Path) -> list[str]:
    """The docs/ pages the README does not link to."""
    readme = root / "README.md"
    linked = {(root / target.partition("#")[0]).resolve() for _, target in links(readme.read_text())}
    return [f"{p.relative_to(root)} (not linked from README.md)"
            for p in sorted((root / "docs").glob("*.md")) if p.resolve() not in linked]


def self_test() -> list[str]:
    """The slug rules and the link finder on cases whose answers are known from GitHub."""
    failures = []
    for heading, expected in [
        ("DPoP (RFC 9449)", "dpop-rfc-9449"),
        ("Opaque tokens (introspection)", "opaque-tokens-introspection"),
        ("`trusted_ips` in a cluster", "trusted_ips-in-a-cluster"),
        ("Envoy's ext_authz timeout", "envoys-ext_authz-timeout"),
        ("In-process: one check, cold and warm, next to its floor (criterion)",
         "in-process-one-check-cold-and-warm-next-to-its-floor-criterion"),
        ("Case 1: the gateway terminates client mTLS", "case-1-the-gateway-terminates-client-mtls"),
        ("Targets (issue 6)", "targets-issue-6"),
        ("A [linked](x.md) heading", "a-linked-heading"),
        ("Cold  checks", "cold--checks"),
    ]:
        if slug(heading) != expected:
            failures.append(f"slug({heading!r}) = {slug(heading)!r}, expected {expected!r}")
    repeated = anchors("# T\n## Keys\n## Keys\n```\n## not a heading\n```\n<a id=\"custom\"></a>\n")
    if repeated != {"t", "keys", "keys-1", "custom"}:
        failures.append(f"anchors of a page with a repeated heading: {sorted(repeated)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        (root / "docs" / "a.md").write_text("# A\n\n## Good part\n")
        (root / "docs" / "orphan.md").write_text("# Nobody links here\n")
        (root / "README.md").write_text(
            "[ok](docs/a.md#good-part) [ok](#r) [web](https://example.com/x#y)\n"
            "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n# R\n"
            "[bad file](docs/b.md) [bad anchor](docs/a.md#bad-part)\n[ref]: docs/c.md\n")
        found, count = broken_links(root)
        expected = ["README.md:7: docs/b.md (no such file)",
                    "README.md:7: docs/a.md#bad-part (no heading with that anchor in docs/a.md)",
                    "README.md:8: docs/c.md (no such file)"]
        if found != expected or count != 5:
            failures.append(f"on a known tree: found {found} in {count} links, expected {expected} in 5")
        orphans = unlinked_pages(root)
        if orphans != ["docs/orphan.md (not linked from README.md)"]:
            failures.append(f"on a known tree: unlinked pages {orphans}, expected only docs/orphan.md")
    return failures


def main() -> int:
    failures = self_test()
    if failures:
        print("check_links.py's own tests fail:\n  " + "\n  ".join(failures))
        return 1
    problems, count = broken_links(ROOT)
    problems += unlinked_pages(ROOT)
    if problems:
        print(f"broken links and unreachable pages ({len(problems)}; {count} links checked):\n  " + "\n  ".join(problems))
        return 1
    print(f"ok: {count} relative links in {len(documents(ROOT))} Markdown files lead somewhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
