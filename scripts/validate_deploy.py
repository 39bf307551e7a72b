#!/usr/bin/env python3
"""Validates every deployment artifact of certbound with real tools, offline.

Run by scripts/validate-deploy.sh (which installs the tools). Each step prints `ok`, `skip` (with
the reason) or `FAIL`; any FAIL makes the exit code 1.

  dockerfile   hadolint on Dockerfile; .dockerignore sends only what the build copies
  envoy        deploy/envoy/generate.py --check (no drift between the deploy configs, the sidecar
               ConfigMap and the e2e template); `envoy --mode validate` on each of them (TLS file
               paths pointed at throw-away certificates), and on the deploy configs with their
               commented per-route policy example switched on
  kong         `certbound import-kong` on tests/kong/services-and-routes.yaml: the certbound.toml
               passes check-config; its Envoy routes, put into deploy/envoy/envoy-header.yaml,
               pass `envoy --mode validate`
  kustomize    every kustomization.yaml: listed files exist, every manifest in its folder is
               listed; with kubectl present, `kubectl kustomize` renders it to the same objects
  kubernetes   kubernetes-validate (strict: unknown fields are errors) on every object of a
               built-in kind, against the oldest and newest Kubernetes versions supported here
  crds         no schema exists offline for ServiceMonitor, PrometheusRule, Istio, Gateway API and
               Envoy Gateway kinds: their required fields and references are checked here instead
               (see check_crd, check_gateway_api)
  e2e-shapes   the end-to-end suite's "istio" and "envoy_gateway" listeners are what deploy/istio
               and deploy/envoy-gateway make those control planes generate: policy and filter names,
               clusters, timeout, failure mode, status on error, shadow rules from notPaths, the
               routes the SecurityPolicy switches on, XFCC settings (see check_e2e_shapes)
  references   per kustomize root: Service selectors and target ports, PDB/HPA/NetworkPolicy/
               ServiceMonitor targets, probes, mounted ConfigMaps, security and resource settings
  certbound    `certbound check-config` on every certbound.toml in a ConfigMap (and on
               deploy/certbound.example.toml), with stand-in CA files at the mounted paths and the
               container's CERTBOUND_* environment; its listen ports match the container ports,
               and its --config lies in a folder mount (no subPath, which would block reloads)
  prometheus   `promtool check rules` and `promtool test rules`; the PrometheusRule carries the
               same groups; every metric an expression reads is one certbound exports
  grafana      the dashboard parses, has the promised panels, every expression compiles
               (promtool, with Grafana's variables substituted) and reads existing metrics
  docs         every relative link and every deploy/, scripts/, docs/ path in README and docs/ exists
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ("1.30.0", "1.37.0")   # oldest (preStop sleep is on by default from 1.30) and newest
EXAMPLE_BEGIN = "# BEGIN example: per-route policy"
EXAMPLE_END = "# END example"

RESULTS: list[tuple[str, str, str]] = []   # (step, status, message)


def report(step: str, status: str, message: str) -> None:
    RESULTS.append((step, status, message))
    print(f"{status:<4} {step:<10} {message}", flush=True)


def ok(step, msg): report(step, "ok", msg)
def fail(step, msg): report(step, "FAIL", msg)
def skip(step, msg): report(step, "skip", msg)


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- throw-away PKI ------------------------------------------------------------------------------

def make_pki(d: Path) -> Path:
    """A self-signed CA and a server certificate: stand-ins for files mounted in production."""
    d.mkdir(parents=True, exist_ok=True)
    for argv in (
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", d / "ca-key.pem", "-out", d / "ca.pem", "-subj", "/CN=stand-in client CA", "-days", "2",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", d / "server-key.pem", "-out", d / "server.pem", "-subj", "/CN=stand-in server", "-days", "2"],
    ):
        r = run(argv)
        if r.returncode != 0:
            raise SystemExit(f"openssl failed: {r.stderr}")
    return d


# --- dockerfile ----------------------------------------------------------------------------------

def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), p) for i in range(1, len(parts) + 1)):
            excluded = not neg
    return excluded


def check_dockerfile(hadolint: str) -> None:
    r = run([hadolint, "--no-color", ROOT / "Dockerfile"])
    if r.returncode == 0:
        ok("dockerfile", "hadolint Dockerfile: no findings")
    else:
        fail("dockerfile", "hadolint Dockerfile:\n" + (r.stdout + r.stderr).strip())
    text = (ROOT / "Dockerfile").read_text()
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    sources = []
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        sources += m.group(1).split()[:-1]
    problems = [f"COPY source {s} is excluded by .dockerignore" for s in sources
                if dockerignore_excludes(patterns, s.rstrip("/"))]
    for must_skip in ("target/release/certbound", ".venv/bin/python", "tests/e2e/idp/node_modules/x",
                      "tests/e2e/.work/x", ".git/HEAD"):
        if not dockerignore_excludes(patterns, must_skip):
            problems.append(f".dockerignore lets {must_skip} into the build context")
    for want in ("USER 65532", "EXPOSE 9191 9192", '"/etc/certbound/certbound.toml"', "distroless"):
        if want not in text:
            problems.append(f"Dockerfile lacks {want!r}")
    if problems:
        fail("dockerfile", "; ".join(problems))
    else:
        ok("dockerfile", f"build context is {', '.join(sources)} only; non-root 65532, ports 9191 9192, config path")


# --- envoy ---------------------------------------------------------------------------------------

def uncomment_example(text: str) -> str | None:
    lines, out, inside, found = text.split("\n"), [], False, False
    for line in lines:
        s = line.strip()
        if s.startswith(EXAMPLE_BEGIN):
            inside, found = True, True
            continue
        if s.startswith(EXAMPLE_END):
            inside = False
            continue
        if inside:
            pad = line[: len(line) - len(line.lstrip())]
            body = s[2:] if s.startswith("# ") else s[1:]
            if body.startswith("- ") or body.startswith(" "):
                out.append(pad + body)
            continue
        out.append(line)
    return "\n".join(out) if found else None


def envoy_validate(envoy: str, config_text: str, work: Path, name: str) -> tuple[bool, str]:
    path = work / name
    path.write_text(config_text)
    r = run([envoy, "--mode", "validate", "-c", path, "--log-level", "warn"], timeout=120)
    lines = (r.stdout + r.stderr).strip().splitlines()
    # A deprecated field validates today and breaks on a later Envoy: count it as a failure.
    deprecated = [l.split("] ", 1)[-1][:200] for l in lines if "Deprecated field" in l or "deprecated option" in l]
    if r.returncode != 0:
        return False, lines[-1] if lines else f"exit {r.returncode}"
    if deprecated:
        return False, "uses deprecated fields: " + " | ".join(deprecated)
    return True, "OK"


def walk(node, found: list) -> list:
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            walk(v, found)
    elif isinstance(node, list):
        for v in node:
            walk(v, found)
    return found


def envoy_semantics(config: dict) -> list[str]:
    """What Envoy's validation accepts but certbound cannot live with."""
    problems = []
    clusters = {c["name"]: c for c in config.get("static_resources", {}).get("clusters", [])}
    # Envoy Gateway names its ext_authz filters envoy.filters.http.ext_authz/<policy>.
    filters = [n for n in walk(config, []) if str(n.get("name", "")).split("/")[0] == "envoy.filters.http.ext_authz"
               and "typed_config" in n]
    if not filters:
        problems.append("no ext_authz filter")
    for f in filters:
        tc = f["typed_config"]
        if tc.get("failure_mode_allow", False) is not False:
            problems.append("failure_mode_allow must be false")
        grpc = tc.get("grpc_service", {})
        cluster = clusters.get(grpc.get("envoy_grpc", {}).get("cluster_name"))
        if cluster is None:
            problems.append("ext_authz must use envoy_grpc with a defined cluster")
            continue
        if not grpc.get("timeout"):
            problems.append("ext_authz grpc_service needs a timeout")
        opts = cluster.get("typed_extension_protocol_options", {}).get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        if "http2_protocol_options" not in opts.get("explicit_http_config", {}):
            problems.append(f"cluster {cluster['name']} must speak HTTP/2 (gRPC)")
    return problems


def check_envoy(envoy: str, work: Path, pki: Path) -> None:
    r = run([sys.executable, DEPLOY / "envoy" / "generate.py", "--check"])
    if r.returncode == 0:
        ok("envoy", r.stdout.strip())
    else:
        fail("envoy", "generated configs drifted:\n" + r.stdout + r.stderr)

    tls = {"/etc/envoy/tls/server.pem": pki / "server.pem", "/etc/envoy/tls/server-key.pem": pki / "server-key.pem",
           "/etc/envoy/tls/client-ca.pem": pki / "ca.pem"}

    def localize(text: str) -> str:
        for k, v in tls.items():
            text = text.replace(k, str(v))
        return text

    configs: list[tuple[str, str]] = []
    for f in sorted((DEPLOY / "envoy").glob("*.yaml")):
        configs.append((rel(f), f.read_text()))
    sidecar = DEPLOY / "kubernetes" / "sidecar" / "envoy-configmap.yaml"
    for doc in load_docs(sidecar):
        configs.append((f"{rel(sidecar)} (data.envoy.yaml)", doc["data"]["envoy.yaml"]))
    tmpl = (ROOT / "tests" / "e2e" / "envoy.yaml.tmpl").read_text()
    ports: dict[str, int] = {}  # one port per placeholder: cluster names may carry it too
    e2e = re.sub(r"@@[A-Z0-9_]*PORT@@", lambda m: str(ports.setdefault(m.group(0), 30001 + len(ports))), tmpl)
    pki_e2e = work / "e2e-pki"
    pki_e2e.mkdir(exist_ok=True)
    for src, dst in (("server.pem", "server.pem"), ("server-key.pem", "server-key.pem"), ("ca.pem", "client-ca-bundle.pem"),
                     ("ca.pem", "server-ca.pem"), ("server.pem", "envoy-grpc.pem"), ("server-key.pem", "envoy-grpc-key.pem"),
                     ("server.pem", "mesh-api.pem"), ("server-key.pem", "mesh-api-key.pem"), ("ca.pem", "mesh-ca.pem")):
        shutil.copy(pki / src, pki_e2e / dst)
    e2e = e2e.replace("@@PKI@@", str(pki_e2e))
    # The module_* twins load libcertbound_envoy.so and the suite's rendered certbound TOML files
    # (@@WORK@@): the suite validates them with the real library on every start; here they go.
    doc = yaml.safe_load(e2e.replace("@@WORK@@", "/nonexistent"))
    doc["static_resources"]["listeners"] = [l for l in doc["static_resources"]["listeners"]
                                            if not l["name"].startswith("module_")]
    e2e = yaml.safe_dump(doc, sort_keys=False)
    if re.search(r"@@[A-Z][A-Z0-9_]*@@", e2e):
        fail("envoy", "tests/e2e/envoy.yaml.tmpl has placeholders this check does not know")
    configs.append(("tests/e2e/envoy.yaml.tmpl (rendered)", e2e))

    for i, (name, text) in enumerate(configs):
        problems = envoy_semantics(yaml.safe_load(text))
        (fail if problems else ok)("envoy", f"{name}: " + ("; ".join(problems) if problems else
                                   "every ext_authz filter fails closed, has a timeout and an HTTP/2 cluster"))
        good, last = envoy_validate(envoy, localize(text), work, f"envoy-{i}.yaml")
        (ok if good else fail)("envoy", f"envoy --mode validate {name}: {last}")
        variant = uncomment_example(text)
        if variant is not None:
            good, last = envoy_validate(envoy, localize(variant), work, f"envoy-{i}-example.yaml")
            (ok if good else fail)("envoy", f"envoy --mode validate {name} with the per-route policy example on: {last}")


def check_kong_import(envoy: str, certbound: str | None, work: Path, pki: Path) -> None:
    """`certbound import-kong` on the Kong examples of tests/kong: its certbound.toml passes
    check-config, and its Envoy routes, put into deploy/envoy/envoy-header.yaml, pass
    `envoy --mode validate`."""
    if not certbound:
        report("kong", "skip", "no --certbound: import-kong not checked")
        return
    out = work / "kong-import"
    env = dict(os.environ, DECK_ISSUER="https://idp.example/realms/master", DECK_CLIENT_ID="kong",
               DECK_CLIENT_SECRET="s3cret", DECK_CA_CERT_ID="kong-ca", DECK_CACHE_TTL="120",
               DECK_CA_CERT_PEM=(pki / "ca.pem").read_text())
    r = run([certbound, "import-kong", ROOT / "tests" / "kong" / "services-and-routes.yaml", "--out", out,
             "--trusted-ip", "10.0.0.0/8"], env=env)
    if r.returncode != 0:
        fail("kong", f"import-kong: {(r.stdout + r.stderr).strip()[-300:]}")
        return
    r = run([certbound, "check-config", "--config", out / "certbound.toml"])
    (ok if r.returncode == 0 else fail)("kong", f"imported certbound.toml: {(r.stdout + r.stderr).strip()[-300:]}")
    config = yaml.safe_load((DEPLOY / "envoy" / "envoy-header.yaml").read_text())
    routes = yaml.safe_load((out / "envoy-routes.yaml").read_text())["routes"]
    hcm = next(n for n in walk(config, []) if n.get("route_config"))
    hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
    app = next(c for c in config["static_resources"]["clusters"] if c["name"] == "app")
    for cluster in sorted({r["route"]["cluster"] for r in routes}):
        clone = copy.deepcopy(app)
        clone["name"] = clone["load_assignment"]["cluster_name"] = cluster
        config["static_resources"]["clusters"].append(clone)
    text = yaml.safe_dump(config).replace("/etc/envoy/tls/server.pem", str(pki / "server.pem")) \
        .replace("/etc/envoy/tls/server-key.pem", str(pki / "server-key.pem")) \
        .replace("/etc/envoy/tls/client-ca.pem", str(pki / "ca.pem"))
    good, last = envoy_validate(envoy, text, work, "envoy-kong-import.yaml")
    (ok if good else fail)("kong", f"envoy --mode validate with the imported Kong routes: {last}")


# --- kustomize roots -----------------------------------------------------------------------------

def kustomize_roots() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def load_root(root: Path, seen: tuple = ()) -> list[dict]:
    """Objects of a kustomize root: its resources (files and nested roots), then its patches
    (strategic merge, enough for the ConfigMap patches used here), then its namespace."""
    if root in seen:
        raise ValueError(f"kustomization cycle at {rel(root)}")
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    objs: list[dict] = []
    for res in k.get("resources", []):
        target = (root / res).resolve()
        if target.is_dir():
            objs += load_root(target, seen + (root,))
        else:
            objs += [copy.deepcopy(d) for d in load_docs(target)]
    for patch in k.get("patches", []):
        for p in load_docs((root / patch["path"]).resolve()):
            matches = [o for o in objs if o["kind"] == p["kind"] and o["metadata"]["name"] == p["metadata"]["name"]]
            if len(matches) != 1:
                raise ValueError(f"{rel(root)}: patch {patch['path']} matches {len(matches)} objects")
            merge(matches[0], p)
    if "namespace" in k:
        for o in objs:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for o in objs:
            for c in containers(o):
                if c.get("image", "").split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
    return objs


def merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def containers(obj: dict) -> list[dict]:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"].get("containers", [])
    return []


def check_kustomizations(kubectl: str | None) -> dict[Path, list[dict]]:
    rendered = {}
    for root in kustomize_roots():
        k = yaml.safe_load((root / "kustomization.yaml").read_text())
        problems = []
        listed = set()
        for key in ("resources", "components"):
            for entry in k.get(key, []):
                target = (root / entry).resolve()
                if target.is_dir():
                    if not (target / "kustomization.yaml").is_file():
                        problems.append(f"{entry}: a folder without kustomization.yaml")
                elif target.is_file():
                    listed.add(target)
                else:
                    problems.append(f"{entry}: does not exist")
        for patch in k.get("patches", []):
            target = (root / patch.get("path", "")).resolve()
            if not target.is_file():
                problems.append(f"patch {patch.get('path')}: does not exist")
            listed.add(target)
        unlisted = [p.name for p in sorted(root.glob("*.yaml"))
                    if p.name != "kustomization.yaml" and p.resolve() not in listed]
        if unlisted:
            problems.append(f"not listed in kustomization.yaml: {', '.join(unlisted)}")
        try:
            objs = load_root(root)
        except Exception as err:  # noqa: BLE001
            problems.append(f"cannot load: {err}")
            objs = []
        if problems:
            fail("kustomize", f"{rel(root)}: " + "; ".join(problems))
            continue
        rendered[root] = objs
        msg = f"{rel(root)}: {len(k.get('resources', []))} resources listed and present, {len(objs)} objects"
        if kubectl:
            r = run([kubectl, "kustomize", root])
            if r.returncode != 0:
                fail("kustomize", f"kubectl kustomize {rel(root)}: {r.stderr.strip()}")
                continue
            theirs = sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
                            for d in yaml.safe_load_all(r.stdout) if d)
            ours = sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs)
            if theirs != ours:
                fail("kustomize", f"{rel(root)}: kubectl kustomize renders {theirs}, this check loads {ours}")
                continue
            ours_by_key = {(o["kind"], o["metadata"]["name"]): o for o in objs}
            for d in yaml.safe_load_all(r.stdout):
                if d and d["kind"] == "ConfigMap" and d.get("data") != ours_by_key[("ConfigMap", d["metadata"]["name"])].get("data"):
                    fail("kustomize", f"{rel(root)}: ConfigMap {d['metadata']['name']} differs from kubectl's rendering")
            msg += "; kubectl kustomize renders the same objects"
        ok("kustomize", msg)
    if not kubectl:
        skip("kustomize", "kubectl not found: roots loaded by this script only (no `kubectl kustomize` render)")
    return rendered


# --- kubernetes schemas --------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    files = []
    for base in (DEPLOY / "kubernetes", DEPLOY / "istio", DEPLOY / "envoy-gateway"):
        for f in sorted(base.rglob("*.yaml")):
            if f.name == "kustomization.yaml" or f.name == "meshconfig-values.yaml":
                continue
            files.append(f)
    return files


def check_kubernetes(providers: set[str]) -> None:
    import kubernetes_validate as kv
    builtin = crd = 0
    for f in manifest_files():
        for doc in load_docs(f):
            label = f"{rel(f)} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            errors = []
            schema_missing = False
            for version in K8S_VERSIONS:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.SchemaNotFoundError:
                    schema_missing = True
                    break
                except kv.ValidationError as err:
                    errors.append(f"{version}: {err.message} at {'.'.join(map(str, err.path))}")
            if schema_missing:
                problems = check_crd(doc, providers)
                crd += 1
                if problems is None:
                    fail("crds", f"{label}: no Kubernetes schema and no structural check for this kind")
                elif problems:
                    fail("crds", f"{label}: " + "; ".join(problems))
                else:
                    ok("crds", f"{label}: structure checked (no schema offline for {doc['apiVersion']})")
            elif errors:
                fail("kubernetes", f"{label}: " + "; ".join(errors))
            else:
                builtin += 1
    ok("kubernetes", f"{builtin} objects pass kubernetes-validate --strict for Kubernetes {' and '.join(K8S_VERSIONS)}")


def need(doc: dict, path: str, problems: list[str]):
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur or cur[part] in (None, "", [], {}):
            problems.append(f"{path} is required")
            return None
        cur = cur[part]
    return cur


ISTIO_GRPC_PROVIDER_FIELDS = {"service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck"}


def check_crd(doc: dict, providers: set[str]) -> list[str] | None:
    """Required fields of the custom resources used here, from their published API docs."""
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    p: list[str] = []
    need(doc, "metadata.name", p)
    need(doc, "metadata.namespace", p)
    if kind == "ServiceMonitor" and api == "monitoring.coreos.com/v1":
        need(doc, "spec.selector.matchLabels", p)
        for ep in need(doc, "spec.endpoints", p) or []:
            if not ep.get("port") and not ep.get("targetPort"):
                p.append("spec.endpoints[].port is required")
        return p
    if kind == "PrometheusRule" and api == "monitoring.coreos.com/v1":
        for g in need(doc, "spec.groups", p) or []:
            if not g.get("name") or not g.get("rules"):
                p.append("every group needs name and rules")
            for r in g.get("rules", []):
                if not r.get("expr") or not (r.get("alert") or r.get("record")):
                    p.append("every rule needs expr and alert or record")
        return p
    if kind == "AuthorizationPolicy" and api in ("security.istio.io/v1", "security.istio.io/v1beta1"):
        action = doc.get("spec", {}).get("action", "ALLOW")
        if action not in ("ALLOW", "DENY", "AUDIT", "CUSTOM"):
            p.append(f"spec.action {action} is not ALLOW, DENY, AUDIT or CUSTOM")
        if action == "CUSTOM":
            name = need(doc, "spec.provider.name", p)
            if name and name not in providers:
                p.append(f"provider {name} is not an extension provider in deploy/istio/meshconfig-values.yaml ({sorted(providers)})")
            rules = need(doc, "spec.rules", p) or []
            for r in rules:
                for to in r.get("to", []):
                    if "hosts" in to.get("operation", {}):
                        p.append("a CUSTOM rule limited by hosts lets requests with other Host spellings through unchecked")
        if not doc.get("spec", {}).get("selector") and not doc.get("spec", {}).get("targetRefs"):
            p.append("spec.selector (or targetRefs) is required: without it the policy covers the whole namespace")
        return p
    if kind == "Gateway" and api in ("networking.istio.io/v1", "networking.istio.io/v1beta1"):
        need(doc, "spec.selector", p)
        for s in need(doc, "spec.servers", p) or []:
            for f in ("number", "name", "protocol"):
                if not s.get("port", {}).get(f):
                    p.append(f"servers[].port.{f} is required")
            if not s.get("hosts"):
                p.append("servers[].hosts is required")
            tls = s.get("tls")
            if s.get("port", {}).get("protocol") == "HTTPS" and not tls:
                p.append("an HTTPS server needs tls")
            if tls:
                mode = tls.get("mode")
                if mode not in ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"):
                    p.append(f"tls.mode {mode} is unknown")
                if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and not (tls.get("credentialName") or tls.get("serverCertificate")):
                    p.append("tls.credentialName is required for SIMPLE/MUTUAL")
        return p
    if api.startswith(("gateway.networking.k8s.io/", "gateway.envoyproxy.io/")):
        return check_gateway_api(doc, kind, p)
    if kind == "VirtualService" and api in ("networking.istio.io/v1", "networking.istio.io/v1beta1"):
        need(doc, "spec.hosts", p)
        for route in need(doc, "spec.http", p) or []:
            for dest in route.get("route", []):
                if not dest.get("destination", {}).get("host"):
                    p.append("http[].route[].destination.host is required")
        return p
    return None


XFCC_MODES = ("Sanitize", "ForwardOnly", "AppendForward", "SanitizeSet", "AlwaysForwardOnly")


def check_gateway_api(doc: dict, kind: str, p: list[str]) -> list[str] | None:
    """Gateway API and Envoy Gateway kinds used by deploy/envoy-gateway: required fields from
    their API references, and the settings certbound depends on (fail closed, XFCC replaced)."""
    spec = doc.get("spec", {})
    targets = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    if kind == "Gateway":
        need(doc, "spec.gatewayClassName", p)
        for li in need(doc, "spec.listeners", p) or []:
            for f in ("name", "port", "protocol"):
                if not li.get(f):
                    p.append(f"listeners[].{f} is required")
            if li.get("protocol") == "HTTPS" and not li.get("tls", {}).get("certificateRefs"):
                p.append("an HTTPS listener needs tls.certificateRefs")
        return p
    if kind == "HTTPRoute":
        need(doc, "spec.parentRefs", p)
        for rule in need(doc, "spec.rules", p) or []:
            for b in rule.get("backendRefs", []):
                if not b.get("name") or not b.get("port"):
                    p.append("rules[].backendRefs[] need name and port")
        return p
    if kind == "ReferenceGrant":
        for f in need(doc, "spec.from", p) or []:
            if not f.get("kind") or not f.get("namespace") or "group" not in f:
                p.append("from[] needs group, kind and namespace")
        for t in need(doc, "spec.to", p) or []:
            if not t.get("kind") or "group" not in t:
                p.append("to[] needs group and kind")
        return p
    if kind in ("SecurityPolicy", "ClientTrafficPolicy"):
        if not targets:
            p.append("spec.targetRefs is required")
        for t in targets:
            if t.get("group") != "gateway.networking.k8s.io" or not t.get("kind") or not t.get("name"):
                p.append("targetRefs[] need group gateway.networking.k8s.io, kind and name")
    if kind == "SecurityPolicy":
        ext = need(doc, "spec.extAuth", p) or {}
        if ("grpc" in ext) == ("http" in ext):
            p.append("extAuth needs exactly one of grpc and http")
        grpc = ext.get("grpc", {})
        refs = grpc.get("backendRefs") or ([grpc["backendRef"]] if grpc.get("backendRef") else [])
        if "grpc" in ext and not refs:
            p.append("extAuth.grpc.backendRefs is required")
        for b in refs:
            if not b.get("name") or not b.get("port"):
                p.append("extAuth.grpc.backendRefs[] need name and port")
        if ext.get("failOpen") is True:
            p.append("extAuth.failOpen must not be true: certbound unreachable would let requests through")
        return p
    if kind == "ClientTrafficPolicy":
        if not spec.get("tls", {}).get("clientValidation", {}).get("caCertificateRefs"):
            p.append("tls.clientValidation.caCertificateRefs is required: certbound binds to the verified client certificate")
        xfcc = spec.get("headers", {}).get("xForwardedClientCert")
        mode = (xfcc or {}).get("mode")
        if mode not in XFCC_MODES:
            p.append(f"headers.xForwardedClientCert.mode {mode!r} is not one of {XFCC_MODES}")
        elif mode != "SanitizeSet":
            p.append(f"headers.xForwardedClientCert.mode {mode}: certbound's xfcc needs SanitizeSet "
                     "(the Gateway writes the only element; other modes forward or drop the client's)")
        return p
    return None


def check_gateway_api_references() -> None:
    """Across the objects of deploy/envoy-gateway: what each one names exists."""
    root = DEPLOY / "envoy-gateway"
    objs = load_root(root)
    by = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}
    p = []
    for o in objs:
        ns, spec = o["metadata"].get("namespace", ""), o.get("spec", {})
        for t in spec.get("targetRefs", []):
            if (t["kind"], ns, t["name"]) not in by:
                p.append(f"{o['kind']} {o['metadata']['name']} targets {t['kind']} {ns}/{t['name']}, which is not here")
        if o["kind"] == "HTTPRoute":
            for ref in spec.get("parentRefs", []):
                if ("Gateway", ref.get("namespace", ns), ref["name"]) not in by:
                    p.append(f"HTTPRoute {o['metadata']['name']}: parent Gateway {ref['name']} is not here")
        if o["kind"] == "SecurityPolicy":
            for b in spec.get("extAuth", {}).get("grpc", {}).get("backendRefs", []):
                bns = b.get("namespace", ns)
                svc = by.get(("Service", bns, b["name"]))
                port = next((pt for pt in (svc or {}).get("spec", {}).get("ports", []) if pt["port"] == b["port"]), None)
                if port is None:
                    p.append(f"SecurityPolicy {o['metadata']['name']}: no Service {bns}/{b['name']} with port {b['port']}")
                elif not (port.get("name", "").startswith("grpc") or port.get("appProtocol") == "grpc"):
                    p.append(f"SecurityPolicy {o['metadata']['name']}: port {b['port']} is not a gRPC port")
                if bns != ns and not any(
                        g["kind"] == "ReferenceGrant" and g["metadata"].get("namespace") == bns
                        and any(f["kind"] == "SecurityPolicy" and f["namespace"] == ns for f in g["spec"]["from"])
                        and any(t["kind"] == "Service" and t.get("name", b["name"]) == b["name"] for t in g["spec"]["to"])
                        for g in objs):
                    p.append(f"SecurityPolicy {o['metadata']['name']}: no ReferenceGrant in {bns} lets it name Service {b['name']}")
    if p:
        fail("crds", f"{rel(root)}: " + "; ".join(p))
    else:
        ok("crds", f"{rel(root)}: targets, parents, the extAuth Service (a gRPC port) and its ReferenceGrant all exist")


def e2e_listener(name: str, grpc_port: int) -> tuple[dict, list[dict]]:
    """A listener of tests/e2e/envoy.yaml.tmpl (placeholders filled) and its HTTP filters."""
    text = (ROOT / "tests/e2e/envoy.yaml.tmpl").read_text().replace("@@GRPC_ROUTES_PORT@@", str(grpc_port))
    config = yaml.safe_load(re.sub(r"@@[A-Z0-9_]+@@", "1", text))
    listener = next(li for li in config["static_resources"]["listeners"] if li["name"] == name)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm, hcm["http_filters"]


def check_e2e_shapes() -> None:
    """The suite's "istio" and "envoy_gateway" listeners against what deploy/istio and
    deploy/envoy-gateway make Istio and Envoy Gateway generate (builder/extauthz.go of Istio,
    internal/xds/translator/extauth.go of Envoy Gateway: docs/deploy-istio.md and
    docs/deploy-envoy-gateway.md)."""
    # Istio: the CUSTOM policy of gateway-mtls and the provider of meshconfig-values.yaml.
    mesh = yaml.safe_load((DEPLOY / "istio" / "meshconfig-values.yaml").read_text())
    prov = mesh["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"]
    policy = load_docs(DEPLOY / "istio" / "gateway-mtls" / "authorizationpolicy.yaml")[0]
    p = []
    hcm, filters = e2e_listener("istio", prov["port"])
    names = [f["name"] for f in filters]
    if names[:2] != ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz"]:
        p.append(f"filters {names}: Istio writes RBAC (shadow) then ext_authz")
    else:
        rbac, authz = filters[0]["typed_config"], filters[1]["typed_config"]
        ns, pname = policy["metadata"]["namespace"], policy["metadata"]["name"]
        want = {f"istio-ext-authz-ns[{ns}]-policy[{pname}]-rule[{i}]" for i in range(len(policy["spec"]["rules"]))}
        shadow = rbac.get("shadow_rules", {})
        if rbac.get("rules") or shadow.get("action") != "DENY" or set(shadow.get("policies", {})) != want:
            p.append(f"RBAC shadow policies {sorted(shadow.get('policies', {}))} (action {shadow.get('action')}), want {sorted(want)} DENY, no enforced rules")
        if rbac.get("shadow_rules_stat_prefix") != "istio_ext_authz_":
            p.append("shadow_rules_stat_prefix must be istio_ext_authz_")
        not_paths = sorted(x for r in policy["spec"]["rules"] for to in r.get("to", [])
                           for x in to.get("operation", {}).get("notPaths", []))
        exact = sorted(re.findall(r"'exact': '([^']*)'", str(shadow.get("policies"))))
        if exact != not_paths:
            p.append(f"shadow rules exempt {exact}, the AuthorizationPolicy's notPaths are {not_paths}")
        grpc = authz.get("grpc_service", {})
        cluster = f"outbound|{prov['port']}||{prov['service']}"
        if grpc.get("envoy_grpc", {}).get("cluster_name") != cluster:
            p.append(f"ext_authz cluster {grpc.get('envoy_grpc', {}).get('cluster_name')}, Istio's is {cluster}")
        if grpc.get("envoy_grpc", {}).get("authority") != cluster.replace("|", "_."):
            p.append("ext_authz authority: Istio writes the cluster name with | replaced by _.")
        if grpc.get("timeout") != prov.get("timeout"):
            p.append(f"ext_authz timeout {grpc.get('timeout')}, the provider's is {prov.get('timeout')}")
        if bool(authz.get("failure_mode_allow")) != prov.get("failOpen", False):
            p.append("failure_mode_allow differs from the provider's failOpen")
        if str(authz.get("status_on_error", {}).get("code")) != str(prov.get("statusOnError")):
            p.append(f"status_on_error {authz.get('status_on_error')}, the provider's statusOnError is {prov.get('statusOnError')}")
        if authz.get("include_peer_certificate") or authz.get("stat_prefix"):
            p.append("Istio's provider writes no include_peer_certificate and no stat_prefix")
        meta = authz.get("filter_enabled_metadata", {})
        if (meta.get("filter") != "envoy.filters.http.rbac"
                or meta.get("path") != [{"key": "istio_ext_authz_shadow_effective_policy_id"}]
                or meta.get("value", {}).get("string_match", {}).get("prefix") != "istio-ext-authz"):
            p.append("filter_enabled_metadata must gate ext_authz on the RBAC shadow policy id (prefix istio-ext-authz)")
    if "typed_per_filter_config" in str(hcm.get("route_config")):
        p.append("a CUSTOM policy sets nothing per route")
    if p:
        fail("e2e-shapes", "tests/e2e istio listener: " + "; ".join(p))
    else:
        ok("e2e-shapes", f"tests/e2e istio listener = AuthorizationPolicy {policy['metadata']['name']} (CUSTOM, "
                         f"{len(policy['spec']['rules'])} rule) + provider {prov['service']}:{prov['port']}")

    # Envoy Gateway: the SecurityPolicy, its HTTPRoutes and the ClientTrafficPolicy.
    objs = [d for f in sorted((DEPLOY / "envoy-gateway").glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in load_docs(f)]
    sp = next(o for o in objs if o["kind"] == "SecurityPolicy")
    ctp = next(o for o in objs if o["kind"] == "ClientTrafficPolicy")
    backend = sp["spec"]["extAuth"]["grpc"]["backendRefs"][0]
    ns, name = sp["metadata"]["namespace"], sp["metadata"]["name"]
    p = []
    hcm, filters = e2e_listener("envoy_gateway", backend["port"])
    fname = f"envoy.filters.http.ext_authz/securitypolicy/{ns}/{name}"
    authz = next((f for f in filters if f["name"] == fname), None)
    if authz is None:
        p.append(f"no filter {fname} (filters {[f['name'] for f in filters]})")
    else:
        cfg = authz["typed_config"]
        if authz.get("disabled") is not True:
            p.append("Envoy Gateway writes the filter disabled and switches it on per route")
        cluster = f"securitypolicy/{ns}/{name}/{backend.get('namespace', ns)}/{backend['name']}"
        if cfg.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name") != cluster:
            p.append(f"cluster {cfg.get('grpc_service', {}).get('envoy_grpc', {}).get('cluster_name')}, Envoy Gateway's is {cluster}")
        if bool(cfg.get("failure_mode_allow")) != sp["spec"]["extAuth"].get("failOpen", False):
            p.append("failure_mode_allow differs from extAuth.failOpen")
        if cfg.get("transport_api_version") != "V3" or cfg.get("include_peer_certificate"):
            p.append("Envoy Gateway writes transport_api_version V3 and no include_peer_certificate")
    targeted = {t["name"] for t in sp["spec"]["targetRefs"] if t["kind"] == "HTTPRoute"}
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    for r in routes:
        route_name = r.get("name", "").split("/")[2] if r.get("name", "").startswith("httproute/") else None
        per = r.get("typed_per_filter_config", {})
        on = per.get(fname, {}).get("@type") == "type.googleapis.com/envoy.config.route.v3.FilterConfig"
        if route_name is None or on != (route_name in targeted) or set(per) - {fname}:
            p.append(f"route {r.get('name')}: the filter must be on exactly for the HTTPRoutes the policy targets {sorted(targeted)}")
    exact = sorted(m["path"]["value"] for o in objs if o["kind"] == "HTTPRoute" and o["metadata"]["name"] not in targeted
                   for rule in o["spec"]["rules"] for m in rule.get("matches", []) if m.get("path", {}).get("type") == "Exact")
    if sorted(r["match"]["path"] for r in routes if "path" in r["match"]) != exact:
        p.append(f"the unchecked exact paths differ from the untargeted HTTPRoutes' {exact}")
    xfcc = ctp["spec"]["headers"]["xForwardedClientCert"]
    if hcm.get("forward_client_cert_details") != "SANITIZE_SET" or xfcc["mode"] != "SanitizeSet":
        p.append("XFCC: ClientTrafficPolicy SanitizeSet is forward_client_cert_details SANITIZE_SET")
    details = {k for k, v in (hcm.get("set_current_client_cert_details") or {}).items() if v}
    if details != {d.lower() for d in xfcc.get("certDetailsToAdd", [])}:
        p.append(f"set_current_client_cert_details {sorted(details)} differs from certDetailsToAdd {xfcc.get('certDetailsToAdd')}")
    if p:
        fail("e2e-shapes", "tests/e2e envoy_gateway listener: " + "; ".join(p))
    else:
        ok("e2e-shapes", f"tests/e2e envoy_gateway listener = SecurityPolicy {ns}/{name} on HTTPRoutes "
                         f"{sorted(targeted)} + ClientTrafficPolicy {ctp['metadata']['name']}")


def check_mesh_config() -> set[str]:
    path = DEPLOY / "istio" / "meshconfig-values.yaml"
    doc = yaml.safe_load(path.read_text())
    providers, problems = set(), []
    base = load_root(DEPLOY / "kubernetes" / "base")
    for ep in doc.get("meshConfig", {}).get("extensionProviders", []):
        name = ep.get("name")
        if not name or name in providers:
            problems.append(f"extension provider name {name!r} missing or repeated")
        providers.add(name)
        grpc = ep.get("envoyExtAuthzGrpc")
        if grpc is None:
            problems.append(f"{name}: not an envoyExtAuthzGrpc provider")
            continue
        unknown = set(grpc) - ISTIO_GRPC_PROVIDER_FIELDS
        if unknown:
            problems.append(f"{name}: Istio's gRPC provider has no field {sorted(unknown)}")
        if grpc.get("failOpen") is not False:
            problems.append(f"{name}: failOpen must be false (fail closed)")
        if not grpc.get("timeout"):
            problems.append(f"{name}: set timeout (Istio's default is 600 s)")
        m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", grpc.get("service", ""))
        svc = None
        if m:
            svc = next((o for o in base if o["kind"] == "Service" and o["metadata"]["name"] == m.group(1)
                        and o["metadata"]["namespace"] == m.group(2)), None)
        if svc is None:
            problems.append(f"{name}: service {grpc.get('service')} is not a Service of deploy/kubernetes/base")
        else:
            port = next((pt for pt in svc["spec"]["ports"] if pt["port"] == grpc.get("port")), None)
            if port is None:
                problems.append(f"{name}: Service {svc['metadata']['name']} has no port {grpc.get('port')}")
            elif not (port.get("name", "").startswith("grpc") or port.get("appProtocol") == "grpc"):
                problems.append(f"{name}: Istio must see port {port['port']} as gRPC (name grpc* or appProtocol grpc)")
    if problems:
        fail("crds", f"{rel(path)}: " + "; ".join(problems))
    else:
        ok("crds", f"{rel(path)}: providers {sorted(providers)} use only Istio's gRPC provider fields, fail closed, "
                   "and name a gRPC port of the base Service")
    return providers


# --- references inside each kustomize root ---------------------------------------------------------

def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(rendered: dict[Path, list[dict]]) -> None:
    for root, objs in rendered.items():
        problems: list[str] = []
        by_kind: dict[str, list[dict]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)
        deployments = by_kind.get("Deployment", [])
        pods = [(d, d["spec"]["template"]) for d in deployments]
        configmaps = {o["metadata"]["name"] for o in by_kind.get("ConfigMap", [])}

        def pod_for(selector: dict):
            return [d for d, t in pods if labels_match(selector, t["metadata"].get("labels", {}))]

        for d, t in pods:
            name = d["metadata"]["name"]
            spec = t["spec"]
            if not labels_match(d["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]):
                problems.append(f"Deployment {name}: selector does not match its pod labels")
            if d["spec"].get("replicas", 1) < 2:
                problems.append(f"Deployment {name}: fewer than 2 replicas")
            psc = spec.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"Deployment {name}: pod securityContext needs runAsNonRoot and seccomp RuntimeDefault")
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"Deployment {name}: automountServiceAccountToken should be false")
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for v in volumes.values():
                if "configMap" in v and v["configMap"]["name"] not in configmaps:
                    problems.append(f"Deployment {name}: volume {v['name']} mounts ConfigMap {v['configMap']['name']}, not in this root")
            for c in spec["containers"]:
                cn = f"{name}/{c['name']}"
                sc = c.get("securityContext", {})
                if not (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                        and "ALL" in sc.get("capabilities", {}).get("drop", [])):
                    problems.append(f"{cn}: securityContext must forbid privilege escalation, drop ALL and mount / read-only")
                res = c.get("resources", {})
                if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
                    problems.append(f"{cn}: needs cpu and memory requests and a memory limit")
                port_names = {p.get("name") for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe"):
                    pr = c.get(probe)
                    if pr:
                        port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
                        if isinstance(port, str) and port not in port_names:
                            problems.append(f"{cn}: {probe} uses port {port}, not a port of the container")
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes:
                        problems.append(f"{cn}: mounts unknown volume {m['name']}")
                if c["name"] == "certbound":
                    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                        problems.append(f"{cn}: readiness must be GET /readyz")
                    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                        problems.append(f"{cn}: liveness must be GET /healthz")
        for s in by_kind.get("Service", []):
            targets = pod_for(s["spec"].get("selector", {}))
            if not targets:
                problems.append(f"Service {s['metadata']['name']}: selects no Deployment's pods")
                continue
            names = {p.get("name") for d in targets for c in containers(d) for p in c.get("ports", [])}
            for port in s["spec"]["ports"]:
                tp = port.get("targetPort", port["port"])
                if isinstance(tp, str) and tp not in names:
                    problems.append(f"Service {s['metadata']['name']}: targetPort {tp} is no container port")
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            for o in by_kind.get(kind, []):
                sel = o["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"].get("matchLabels", {})
                if not pod_for(sel):
                    problems.append(f"{kind} {o['metadata']['name']}: selects no Deployment's pods")
        for h in by_kind.get("HorizontalPodAutoscaler", []):
            ref = h["spec"]["scaleTargetRef"]
            if not any(d["metadata"]["name"] == ref["name"] for d in deployments if ref["kind"] == "Deployment"):
                problems.append(f"HorizontalPodAutoscaler {h['metadata']['name']}: target {ref['kind']}/{ref['name']} not found")
            if h["spec"].get("minReplicas", 1) < 2:
                problems.append(f"HorizontalPodAutoscaler {h['metadata']['name']}: minReplicas below 2")
        for sm in by_kind.get("ServiceMonitor", []):
            svcs = [s for s in by_kind.get("Service", [])
                    if labels_match(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
            if not svcs:
                problems.append(f"ServiceMonitor {sm['metadata']['name']}: selects no Service")
            for ep in sm["spec"]["endpoints"]:
                if not any(p.get("name") == ep.get("port") for s in svcs for p in s["spec"]["ports"]):
                    problems.append(f"ServiceMonitor {sm['metadata']['name']}: no selected Service has port {ep.get('port')}")
        gateways = {f"{g['metadata']['namespace']}/{g['metadata']['name']}" for g in by_kind.get("Gateway", [])}
        for vs in by_kind.get("VirtualService", []):
            for g in vs["spec"].get("gateways", []):
                if g != "mesh" and g not in gateways:
                    problems.append(f"VirtualService {vs['metadata']['name']}: gateway {g} is not in this root")
        if problems:
            fail("references", f"{rel(root)}: " + "; ".join(problems))
        else:
            ok("references", f"{rel(root)}: selectors, ports, probes, mounts, targets, security and resources consistent")


# --- certbound check-config ----------------------------------------------------------------------

def certbound_configs(rendered: dict[Path, list[dict]]) -> list[tuple[str, str, dict | None, dict | None]]:
    """(label, toml, deployment, container) for every certbound.toml in a ConfigMap."""
    found, seen = [], set()
    for root, objs in rendered.items():
        for cm in (o for o in objs if o["kind"] == "ConfigMap" and "certbound.toml" in o.get("data", {})):
            key = (cm["metadata"]["name"], cm["data"]["certbound.toml"])
            if key in seen:
                continue
            seen.add(key)
            dep = cont = None
            for d in (o for o in objs if o["kind"] == "Deployment"):
                spec = d["spec"]["template"]["spec"]
                vols = {v["name"] for v in spec.get("volumes", []) if v.get("configMap", {}).get("name") == cm["metadata"]["name"]}
                for c in spec["containers"]:
                    if any(m["name"] in vols for m in c.get("volumeMounts", [])):
                        dep, cont = d, c
            found.append((f"{rel(root)} ConfigMap {cm['metadata']['name']}", cm["data"]["certbound.toml"], dep, cont))
    return found


def check_certbound(certbound: str | None, rendered: dict[Path, list[dict]], work: Path, pki: Path) -> None:
    configs = certbound_configs(rendered)
    example = DEPLOY / "certbound.example.toml"
    configs.append((rel(example), example.read_text(), None, None))
    for i, (label, text, dep, cont) in enumerate(configs):
        problems = []
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            fail("certbound", f"{label}: not TOML: {err}")
            continue
        if cont is not None:
            ports = {p["containerPort"] for p in cont.get("ports", [])}
            for key in ("grpc_listen", "admin_listen"):
                # certbound's defaults are loopback: a container config must say where it listens.
                if key not in conf:
                    problems.append(f"{key} is not set: the default (127.0.0.1) is unreachable through {cont['name']}'s ports")
                    continue
                port = int(conf[key].rsplit(":", 1)[1])
                host = conf[key].rsplit(":", 1)[0]
                if port not in ports and not host.startswith("127."):
                    problems.append(f"{key} port {port} is not a container port of {cont['name']}")
            mounts = [m["mountPath"] for m in cont.get("volumeMounts", [])]
            # Kubernetes never updates a subPath mount: certbound would never see a change to reload.
            for m in cont.get("volumeMounts", []):
                if m.get("subPath"):
                    problems.append(f"{m['mountPath']} is mounted with subPath, which Kubernetes never updates")
            args = cont.get("args", [])
            config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else "/etc/certbound/certbound.toml"
            if not any(config_path.startswith(m.rstrip("/") + "/") for m in mounts):
                problems.append(f"--config {config_path} is not inside a volumeMount folder of {cont['name']}")
            hdr = conf.get("proof_of_possession_mtls_from_header", {})
            for path in hdr.get("ca_certificates", []) + conf.get("idp_ca_certificates", []):
                if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                    problems.append(f"{path} is not under a volumeMount of {cont['name']}")
        # Mounted files become stand-ins under a temporary /etc/certbound.
        etc = work / f"certbound-{i}"
        (etc / "ca").mkdir(parents=True, exist_ok=True)
        localized = text.replace("/etc/certbound/", f"{etc}/")
        for p in re.findall(r'"(' + re.escape(str(etc)) + r'/[^"]+\.(?:pem|crt))"', localized):
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pki / "ca.pem", p)
        cfg = etc / "certbound.toml"
        cfg.write_text(localized)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTBOUND_")}
        container_env = []
        for e in (cont or {}).get("env", []):
            if e["name"].startswith("CERTBOUND_") and "value" in e:
                env[e["name"]] = e["value"]
                container_env.append(e["name"])
        if certbound is None:
            skip("certbound", f"{label}: no certbound binary, check-config not run")
        else:
            r = run([certbound, "check-config", "--config", cfg], env=env, timeout=60)
            if r.returncode != 0:
                problems.append("certbound check-config: " + (r.stdout + r.stderr).strip().replace("\n", " "))
        if problems:
            fail("certbound", f"{label}: " + "; ".join(problems))
        elif certbound is not None:
            extra = f" with {', '.join(container_env)}" if container_env else ""
            where = f"; ports and mounted paths match container {cont['name']}, its config is mounted as a folder (no subPath)" if cont is not None else ""
            ok("certbound", f"{label}: certbound check-config passes{extra}{where}")


# --- prometheus and grafana ----------------------------------------------------------------------

def certbound_metrics() -> set[str]:
    src = (ROOT / "src" / "metrics.rs").read_text()
    names = set(re.findall(r'"(certbound_[a-z0-9_]+)"', src))
    out = set(names)
    for n in names:
        if "duration_seconds" in n:   # the histogram
            out |= {n + "_bucket", n + "_sum", n + "_count"}
    if "ProcessCollector" in src:   # the prometheus crate's process collector, on Linux
        out |= {"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                "process_virtual_memory_bytes", "process_resident_memory_bytes",
                "process_start_time_seconds", "process_threads"}
    return out | {"up"}


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)             # strings
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\w+|\$\{\w+\}", "", e)                    # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def check_prometheus(promtool: str | None, work: Path) -> None:
    known = certbound_metrics()
    rules_file = DEPLOY / "grafana" / "certbound-alerts.yaml"
    tests_file = DEPLOY / "grafana" / "certbound-alerts.test.yaml"
    if promtool:
        for argv, what in (([promtool, "check", "rules", rules_file], "promtool check rules"),
                           ([promtool, "test", "rules", tests_file], "promtool test rules")):
            r = run(argv, cwd=rules_file.parent)
            out = (r.stdout + r.stderr).strip()
            (ok if r.returncode == 0 else fail)("prometheus", f"{what} {rel(argv[-1])}: " + (
                out.splitlines()[-1].strip() if r.returncode == 0 else out))
    else:
        skip("prometheus", "promtool not found")
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    pr = load_docs(DEPLOY / "kubernetes" / "prometheus-operator" / "prometheusrule.yaml")[0]
    if pr["spec"]["groups"] == groups:
        ok("prometheus", "PrometheusRule spec.groups equals deploy/grafana/certbound-alerts.yaml")
    else:
        fail("prometheus", "deploy/kubernetes/prometheus-operator/prometheusrule.yaml differs from deploy/grafana/certbound-alerts.yaml")
    unknown = {n for g in groups for r in g["rules"] for n in metric_names(r["expr"])} - known
    if unknown:
        fail("prometheus", f"alert expressions read metrics certbound does not export: {sorted(unknown)}")
    else:
        ok("prometheus", f"alert expressions read only exported metrics ({len(known)} names from src/metrics.rs, and up)")


def check_grafana(promtool: str | None, work: Path) -> None:
    path = DEPLOY / "grafana" / "certbound-dashboard.json"
    try:
        dash = json.loads(path.read_text())
    except ValueError as err:
        fail("grafana", f"{rel(path)}: not JSON: {err}")
        return
    known = certbound_metrics()
    exprs = []
    for panel in dash.get("panels", []):
        for t in panel.get("targets", []):
            if t.get("expr"):
                exprs.append((panel["title"], t["expr"]))
    titles = " | ".join(p.get("title", "") for p in dash.get("panels", []))
    problems = []
    for want in ("by reason", "Deny ratio", "p50 / p99", "JWKS fetches", "JWKS fetch failures",
                 "Deny ratio by policy", "OCSP and CRL", "DPoP", "reloads"):
        if want not in titles:
            problems.append(f"no panel titled like {want!r}")
    unknown = {n for _, e in exprs for n in metric_names(e)} - known
    if unknown:
        problems.append(f"expressions read metrics certbound does not export: {sorted(unknown)}")
    if problems:
        fail("grafana", f"{rel(path)}: " + "; ".join(problems))
    else:
        ok("grafana", f"{rel(path)}: {len(dash['panels'])} panels, {len(exprs)} expressions over exported metrics only")
    if not promtool:
        skip("grafana", "promtool not found: expressions not compiled")
        return
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${job}": "certbound", "$job": "certbound",
             "${policy}": ".+", "$policy": ".+"}
    rules = []
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        rules.append({"record": f"dashboard:panel_{i}", "expr": e})
    f = work / "dashboard-exprs.rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run([promtool, "check", "rules", f])
    (ok if r.returncode == 0 else fail)("grafana", f"promtool compiles all {len(rules)} dashboard expressions" if r.returncode == 0
                                        else "dashboard expressions do not compile: " + (r.stdout + r.stderr).strip())


# --- docs ----------------------------------------------------------------------------------------

def check_docs() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing, links = [], 0
    for f in files:
        text = f.read_text()
        # Markdown links to files of the repository, relative to the document.
        for m in re.finditer(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue
            links += 1
            if not (f.parent / target).exists():
                missing.append(f"{rel(f)}: link {target}")
        # Repository paths named in the text, relative to the root.
        for m in re.finditer(r"(?<![\w/.-])((?:deploy|scripts|docs)/[A-Za-z0-9_./-]+[A-Za-z0-9_])", text):
            if not (ROOT / m.group(1)).exists():
                missing.append(f"{rel(f)}: {m.group(1)}")
    if missing:
        fail("docs", "paths named in the docs do not exist: " + "; ".join(sorted(set(missing))))
    else:
        ok("docs", f"every link ({links}) and every deploy/, scripts/, docs/ path in {len(files)} documents exists")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--promtool")
    ap.add_argument("--kubectl")
    ap.add_argument("--certbound")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="certbound-validate-"))
    try:
        pki = make_pki(work / "pki")
        check_dockerfile(args.hadolint)
        check_envoy(args.envoy, work, pki)
        check_kong_import(args.envoy, args.certbound, work, pki)
        rendered = check_kustomizations(args.kubectl)
        providers = check_mesh_config()
        check_kubernetes(providers)
        check_gateway_api_references()
        check_e2e_shapes()
        check_references(rendered)
        check_certbound(args.certbound, rendered, work, pki)
        check_prometheus(args.promtool, work)
        check_grafana(args.promtool, work)
        check_docs()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in RESULTS if r[1] == "FAIL"]
    passed = sum(1 for r in RESULTS if r[1] == "ok")
    skipped = sum(1 for r in RESULTS if r[1] == "skip")
    print(f"\nvalidate-deploy: {passed} passed, {len(failed)} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
