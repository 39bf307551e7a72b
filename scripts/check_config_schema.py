#!/usr/bin/env python3
"""Every certbound configuration in the repository fits `certbound config-schema`, checked with an
independent JSON Schema validator (python-jsonschema, draft 2020-12), as an editor or CI would:

  - every certbound TOML file (deploy/, examples/, fuzz/fixtures/, tests/), and every
    `certbound.toml` held in a Kubernetes ConfigMap under deploy/ and examples/;
  - the end-to-end suite's configuration of every instance, rendered by tests/e2e/stack.py;
  - what `certbound import-kong` writes for each decK file of tests/kong;
  - every ```toml block of the Markdown pages (fragments of a certbound.toml; Cargo manifests
    aside).

First the script proves the schema refuses what certbound refuses: deploy/certbound.example.toml
passes, and the same file with an unknown key (at the top, in a nested table, in a
`[policies.NAME]` table), a wrong type, a value outside a key's range or an unknown mode fails.
Exits 1 naming each file and key that does not fit.

    python3 scripts/check_config_schema.py [--certbound target/debug/certbound]

Needs `jsonschema` and `PyYAML` (scripts/validate-deploy.requirements.txt installs both).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "target", ".venv", "node_modules", ".work", "corpus", "artifacts"}
# TOML files of the build, not certbound configurations.
NOT_CONFIG = {"Cargo.toml", "clippy.toml", "deny.toml", "rustfmt.toml", "rust-toolchain.toml",
              "pyproject.toml", "config.toml", "Cargo.lock"}
CONFIG_DIRS = ("deploy", "examples", "fuzz/fixtures", "tests")
FENCE = re.compile(r"^\s*```toml\s*$")
CARGO_TABLE = re.compile(r"^\[(package|workspace|dependencies|dev-dependencies|lints|profile)\b", re.M)


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def walk(top: Path):
    for p in sorted(top.rglob("*")):
        if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts) and p.is_file():
            yield p


def problems(validator, config: dict) -> list[str]:
    out = []
    for e in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        out.append(f"{where}: {e.message}")
    return out


def self_test(validator) -> list[str]:
    """The schema accepts the shipped example and refuses each kind of mistake certbound refuses."""
    base = tomllib.loads((ROOT / "deploy" / "certbound.example.toml").read_text())
    failures = []
    if errs := problems(validator, base):
        failures.append(f"deploy/certbound.example.toml does not fit: {errs}")

    def bad(what: str, change) -> None:
        config = copy.deepcopy(base)
        change(config)
        if not problems(validator, config):
            failures.append(f"the schema accepts {what}")

    def nested(table: str, key: str, value):
        return lambda c: c.setdefault(table, {}).__setitem__(key, value)

    bad("an unknown top-level key", lambda c: c.__setitem__("isuer", "https://idp.example"))
    bad("an unknown key in [proof_of_possession_mtls_from_header]",
        nested("proof_of_possession_mtls_from_header", "certificate_header", "x-client-cert"))
    bad("an unknown key in [limits]", nested("limits", "max_tokens", 3))
    bad("an unknown key in [policies.NAME]",
        lambda c: c.setdefault("policies", {}).__setitem__("p", {"scope_required": ["a"]}))
    bad("a process-wide key in [policies.NAME]",
        lambda c: c.setdefault("policies", {}).__setitem__("p", {"grpc_listen": "0.0.0.0:1"}))
    bad("an unknown key in [[routes]]",
        lambda c: c.__setitem__("routes", [{"path": ["/a"], "policy": "default"}]))
    bad("a string where a number belongs", lambda c: c.__setitem__("timeout", "10s"))
    bad("a number where a list belongs", lambda c: c.__setitem__("audience", 3))
    bad("a table where a boolean belongs in [policies.NAME]",
        lambda c: c.setdefault("policies", {}).__setitem__("p", {"hide_credentials": {"a": 1}}))
    bad("a limit over its ceiling", nested("limits", "max_token_bytes", 10**9))
    bad("an unknown mode", lambda c: c.__setitem__("proof_of_possession_mtls", "required"))
    bad("a policy name with a space", lambda c: c.setdefault("policies", {}).__setitem__("a b", {}))
    return failures


def toml_files() -> list[Path]:
    found = []
    for d in CONFIG_DIRS:
        if (ROOT / d).is_dir():
            found += [p for p in walk(ROOT / d) if p.suffix == ".toml" and p.name not in NOT_CONFIG]
    return found


def configmap_configs() -> list[tuple[str, str]]:
    found = []
    for d in ("deploy", "examples"):
        if not (ROOT / d).is_dir():
            continue
        for p in walk(ROOT / d):
            if p.suffix not in (".yaml", ".yml"):
                continue
            try:
                docs = list(yaml.safe_load_all(p.read_text()))
            except yaml.YAMLError:
                continue  # not YAML this script understands; validate-deploy.sh checks it
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                    text = (doc.get("data") or {}).get("certbound.toml")
                    if text:
                        found.append((f"{rel(p)} ConfigMap {doc['metadata']['name']}", text))
    return found


def e2e_configs(work: Path) -> list[tuple[str, str]]:
    """The suite's certbound.toml of every instance, rendered by tests/e2e/stack.py itself (ports,
    paths and issuer are stand-ins: the shape is what counts)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import stack  # noqa: E402

    st = stack.Stack()
    st.work = st.pki = work
    st.issuer = "https://127.0.0.1:8443"
    found = []
    for mode in stack.CERTBOUND_MODES + stack.DPOP_MODES:
        path = st.certbound_config(mode)
        found.append((f"tests/e2e/certbound.toml.tmpl ({mode}, rendered by stack.py)", path.read_text()))
    return found


def kong_imports(certbound: str, work: Path) -> list[tuple[str, str]]:
    # The decK files' ${{ env "DECK_*" }} placeholders, as scripts/validate_deploy.py sets them.
    env = dict(os.environ, DECK_ISSUER="https://idp.example/realms/master", DECK_CLIENT_ID="kong",
               DECK_CLIENT_SECRET="s3cret", DECK_CA_CERT_ID="kong-ca", DECK_CACHE_TTL="120",
               DECK_CA_CERT_PEM=(ROOT / "fuzz" / "fixtures" / "client-ca.pem").read_text())
    found = []
    for deck in sorted((ROOT / "tests" / "kong").glob("*.yaml")):
        out = work / deck.stem
        r = subprocess.run([certbound, "import-kong", str(deck), "--out", str(out),
                            "--trusted-ip", "10.0.0.0/8"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            found.append((f"import-kong {rel(deck)}", None))
        else:
            found.append((f"import-kong {rel(deck)}", (out / "certbound.toml").read_text()))
    return found


def markdown_blocks() -> list[tuple[str, str]]:
    found = []
    for p in walk(ROOT):
        if p.suffix != ".md":
            continue
        lines = p.read_text().split("\n")
        block, start = None, 0
        for n, line in enumerate(lines, 1):
            if block is None and FENCE.match(line):
                block, start = [], n
            elif block is not None and line.strip().startswith("```"):
                # A Cargo manifest is TOML too, and no certbound configuration.
                if not CARGO_TABLE.search("\n".join(block)):
                    found.append((f"{rel(p)}:{start}", "\n".join(block)))
                block = None
            elif block is not None:
                block.append(line)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--certbound", default=str(ROOT / "target" / "debug" / "certbound"))
    args = ap.parse_args()
    r = subprocess.run([args.certbound, "config-schema"], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {args.certbound} config-schema: {r.stderr.strip()}")
        return 1
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    failures = self_test(validator)
    for f in failures:
        print(f"FAIL self-test: {f}")
    checked = 0
    with tempfile.TemporaryDirectory() as work:
        sources = [(rel(p), p.read_text()) for p in toml_files()]
        sources += configmap_configs() + e2e_configs(Path(work)) + kong_imports(args.certbound, Path(work))
        sources += markdown_blocks()
        for label, text in sources:
            if text is None:
                failures.append(label)
                print(f"FAIL {label}: the import failed")
                continue
            try:
                config = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                failures.append(label)
                print(f"FAIL {label}: not TOML: {e}")
                continue
            checked += 1
            for problem in problems(validator, config):
                failures.append(label)
                print(f"FAIL {label}: {problem}")
    if failures:
        return 1
    print(f"ok: {checked} certbound configurations fit `certbound config-schema`; "
          f"the schema refuses unknown keys, wrong types, out-of-range values and unknown modes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
