#!/usr/bin/env python3
"""Checks every example in examples/ with the real tools, the way its README runs it.

Run by scripts/validate-deploy.sh (which installs Envoy and builds certbound). examples/ is copied
to a temporary folder, examples/pki.sh writes the throw-away certificates, keys and tokens there
(nothing generated is committed), and then, from each example's folder:

  readme       every example folder has a README.md
  certbound    `certbound check-config` on its certbound.toml and on the certbound.toml of every
               ConfigMap in it: exit 0 and no warning (an example shows a clean configuration)
  envoy        `envoy --mode validate -c envoy.yaml` (relative paths resolve against the folder,
               as when the README runs it); a deprecated field counts as a failure; every
               ext_authz filter fails closed, has a timeout and an HTTP/2 cluster
  nginx        `nginx -t` on nginx.conf with the folder as prefix
  kustomize    with kubectl, `kubectl kustomize` renders the folder and its certbound ConfigMap is
               the example's own; without, every listed resource and patch exists

An example with nothing to check fails: each one must carry a configuration this script runs.
Each step prints `ok`, `skip` (with the reason) or `FAIL`; any FAIL makes the exit code 1.

    scripts/validate_examples.py --certbound target/debug/certbound --envoy .venv/bin/envoy
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# The same rules as the deployment files: fail closed, a timeout, HTTP/2 to certbound.
from validate_deploy import envoy_semantics

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# What running an example leaves behind (examples/pki.sh, nginx): never copied.
IGNORE = shutil.ignore_patterns("pki", "nginx.pid", "tmp-*")

RESULTS: list[tuple[str, str]] = []   # (status, message)


def report(status: str, step: str, message: str) -> None:
    RESULTS.append((status, message))
    print(f"{status:<4} {step:<10} {message}", flush=True)


def run(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def output(r: subprocess.CompletedProcess) -> str:
    return (r.stdout + r.stderr).strip()


def check_config(certbound: str, config: Path, label: str) -> None:
    r = run([certbound, "check-config", "--config", config], config.parent)
    warnings = [line for line in output(r).splitlines() if line.startswith("warning:")]
    if r.returncode != 0:
        report("FAIL", "certbound", f"{label}: check-config exit {r.returncode}: {output(r)}")
    elif warnings:
        report("FAIL", "certbound", f"{label}: check-config warns: {' | '.join(warnings)}")
    else:
        report("ok", "certbound", f"{label}: {r.stdout.strip().split(': ', 1)[-1]}")


def configmap_tomls(path: Path) -> list[str]:
    """certbound.toml of every ConfigMap in a YAML file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [d["data"]["certbound.toml"] for d in docs
            if d.get("kind") == "ConfigMap" and "certbound.toml" in (d.get("data") or {})]


def check_envoy(envoy: str, folder: Path, label: str) -> None:
    problems = envoy_semantics(yaml.safe_load((folder / "envoy.yaml").read_text()))
    if problems:
        report("FAIL", "envoy", f"{label}: {'; '.join(problems)}")
    r = run([envoy, "--mode", "validate", "-c", "envoy.yaml", "--log-level", "warn"], folder)
    lines = output(r).splitlines()
    deprecated = [l.split("] ", 1)[-1][:200] for l in lines if "Deprecated field" in l or "deprecated option" in l]
    if r.returncode != 0:
        report("FAIL", "envoy", f"{label}: envoy --mode validate: {lines[-1] if lines else r.returncode}")
    elif deprecated:
        report("FAIL", "envoy", f"{label}: uses deprecated fields: {' | '.join(deprecated)}")
    else:
        report("ok", "envoy", f"{label}: envoy --mode validate OK")


def check_nginx(nginx: str | None, folder: Path, label: str) -> None:
    if not nginx:
        report("skip", "nginx", f"{label}: no nginx binary, nginx -t not run")
        return
    r = run([nginx, "-t", "-p", f"{folder}/", "-c", "nginx.conf"], folder)
    if r.returncode != 0:
        report("FAIL", "nginx", f"{label}: nginx -t: {output(r)}")
    else:
        report("ok", "nginx", f"{label}: nginx -t OK")


def check_kustomization(kubectl: str | None, folder: Path, label: str) -> None:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    # The copy sits outside the repository: references to deploy/ are resolved from the original.
    original = EXAMPLES / folder.name
    listed = [*kustomization.get("resources", []),
              *(p["path"] for p in kustomization.get("patches", []) if "path" in p)]
    missing = [p for p in listed if not (original / p).exists()]
    if missing:
        report("FAIL", "kustomize", f"{label}: listed but missing: {', '.join(missing)}")
        return
    if not kubectl:
        report("ok", "kustomize", f"{label}: every listed resource and patch exists (no kubectl to render)")
        return
    r = run([kubectl, "kustomize", original], ROOT)
    if r.returncode != 0:
        report("FAIL", "kustomize", f"{label}: kubectl kustomize: {output(r)}")
        return
    rendered = [d for d in yaml.safe_load_all(r.stdout) if isinstance(d, dict)]
    have = [d["data"]["certbound.toml"] for d in rendered
            if d.get("kind") == "ConfigMap" and "certbound.toml" in (d.get("data") or {})]
    want = [t for f in sorted(folder.glob("*.yaml")) for t in configmap_tomls(f)]
    if want and have != want:
        report("FAIL", "kustomize", f"{label}: the rendered certbound ConfigMap is not the example's own")
    else:
        report("ok", "kustomize", f"{label}: kubectl kustomize renders {len(rendered)} objects")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--certbound", required=True)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--nginx", default=shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None))
    ap.add_argument("--kubectl", default=shutil.which("kubectl"))
    args = ap.parse_args()
    # The checks run from each example's folder: a relative tool path would no longer lead there.
    for name in ("certbound", "envoy", "nginx", "kubectl"):
        value = getattr(args, name)
        if value and "/" in value:
            setattr(args, name, os.path.abspath(value))
    work = Path(tempfile.mkdtemp(prefix="certbound-examples-"))
    try:
        copy = work / "examples"
        shutil.copytree(EXAMPLES, copy, ignore=IGNORE)
        r = run([copy / "pki.sh"], copy)
        if r.returncode != 0:
            report("FAIL", "pki", f"examples/pki.sh: {output(r)}")
            return 1
        report("ok", "pki", r.stdout.strip().replace(str(work) + "/", ""))
        folders = sorted(p for p in copy.iterdir() if p.is_dir() and p.name != "pki")
        for folder in folders:
            label = f"examples/{folder.name}"
            before = len(RESULTS)
            if not (folder / "README.md").is_file():
                report("FAIL", "readme", f"{label}: no README.md")
            if (folder / "certbound.toml").is_file():
                check_config(args.certbound, folder / "certbound.toml", f"{label}/certbound.toml")
            for f in sorted(folder.glob("*.yaml")):
                for i, text in enumerate(configmap_tomls(f)):
                    path = work / f"{folder.name}-{f.stem}-{i}.toml"
                    path.write_text(text)
                    check_config(args.certbound, path, f"{label}/{f.name} (certbound.toml)")
            if (folder / "envoy.yaml").is_file():
                check_envoy(args.envoy, folder, f"{label}/envoy.yaml")
            if (folder / "nginx.conf").is_file():
                check_nginx(args.nginx, folder, f"{label}/nginx.conf")
            if (folder / "kustomization.yaml").is_file():
                check_kustomization(args.kubectl, folder, f"{label}/kustomization.yaml")
            if not any(status == "ok" for status, _ in RESULTS[before:]):
                report("FAIL", "example", f"{label}: nothing checked (no certbound.toml, envoy.yaml, nginx.conf or kustomization.yaml)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for status, _ in RESULTS if status == "FAIL")
    passed = sum(1 for status, _ in RESULTS if status == "ok")
    print(f"\nvalidate-examples: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
