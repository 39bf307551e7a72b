"""`certbound import-kong` end to end: the decK fixture tests/kong/route-precedence.yaml imported,
its Envoy routes (routing only: no per-route ext_authz settings) loaded into the real Envoy with
one ext_authz filter, in front of a certbound serving the certbound.toml it writes. certbound's
`[[routes]]` rules, not Envoy's route order, give every request Kong's decision
(tests/kong/route-precedence.decisions): open routes pass without a token, protected ones are
decided by the policy of the plugin Kong runs, and a request no Kong route matches never reaches
an upstream, even through a catch-all route of the operator's. The same configuration loaded by the certbound module in the same Envoy (the
module face) must decide the same.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from pathlib import Path

import pytest

from stack import ROOT, Response, find_envoy, free_ports, http_get, port_open, wait_until

KONG = ROOT / "tests" / "kong"
ACCESS_LOG = ("case=%REQ(X-CASE)% ext_authz=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:policy)%/"
              "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:reason)% "
              "module=%FILTER_STATE(certbound:PLAIN)%")


LISTENER = """\
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "{name} case=%REQ(X-CASE)% status=%RESPONSE_CODE% policy=%DYNAMIC_METADATA({namespace}:policy)% reason=%DYNAMIC_METADATA({namespace}:reason)%\\n"
          route_config:
            name: imported
            virtual_hosts:
            - name: imported
              domains: ["*"]
{routes}
          http_filters:
{filter}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

# One filter for every route, as Istio's CUSTOM action or a plain deployment configures it.
EXT_AUTHZ = """\
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{ code: 503 }}
              grpc_service:
                envoy_grpc: {{ cluster_name: certbound }}
                timeout: 2s"""

MODULE = """\
          - name: certbound
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: certbound_envoy }}
              filter_name: certbound
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: "{config}\""""

CLUSTER = """\
  - name: {name}
    type: STATIC
    connect_timeout: 1s
{options}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"""

HTTP2 = """\
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"""

FACES = ("ext_authz", "module")


def read_decisions() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (KONG / "route-precedence.decisions").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            method, host, path, decision = line.split()
            rows.append((method, host, path, decision))
    return rows


@pytest.fixture(scope="module")
def imported(stack):
    """Envoy on the imported routes (a listener per face), certbound on the imported
    configuration; {face: listener port}."""
    work = stack.work / "kong-import"
    work.mkdir(exist_ok=True)
    out = work / "out"
    r = subprocess.run([str(stack.certbound_bin), "import-kong", str(KONG / "route-precedence.yaml"),
                        "--out", str(out)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "DECK_ISSUER": stack.issuer})
    assert r.returncode == 0, r.stdout + r.stderr
    routes_yaml = (out / "envoy-routes.yaml").read_text()
    # Routing only: certbound's rules decide, so nothing per route reaches the filter.
    yaml_lines = [line for line in routes_yaml.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in yaml_lines if "typed_per_filter_config" in line or "ext_authz" in line]
    listen, module, admin, grpc, cb_admin = free_ports(5)

    # The imported configuration as written, plus what a decK file cannot say: where to listen
    # and the suite's IdP CA.
    config = out / "certbound.toml"
    config.write_text(
        f'grpc_listen = "127.0.0.1:{grpc}"\nadmin_listen = "127.0.0.1:{cb_admin}"\n'
        f'idp_ca_certificates = ["{stack.pki / "server-ca.pem"}"]\n' + config.read_text())
    stack._run("certbound-kong-import-check", [stack.certbound_bin, "check-config", "--config", config],
               env={k: v for k, v in os.environ.items() if k != "CERTBOUND_BIN"})
    proc = stack._spawn("certbound-kong-import", [stack.certbound_bin, "serve", "--config", config],
                        drop_env=("CERTBOUND_BIN",))
    wait_until("certbound-kong-import /readyz", lambda: http_get(cb_admin, "/readyz")[0] == 200, 30, proc=proc)

    lines = routes_yaml.splitlines()
    start = lines.index("routes:")
    # A route of the operator's after the imported ones, as a catch-all to a default backend:
    # what no Kong route matches reaches certbound, which must refuse it (Kong answers 404).
    catch_all = ["- name: operator-catch-all", "  match: { prefix: \"/\" }", "  route: { cluster: docs }"]
    routes = "\n".join(" " * 14 + line for line in ["routes:", *lines[start + 1:], *catch_all])
    listeners = "".join([
        LISTENER.format(name="ext_authz", port=listen, routes=routes, filter=EXT_AUTHZ.format(),
                        namespace="envoy.filters.http.ext_authz"),
        LISTENER.format(name="module", port=module, routes=routes, filter=MODULE.format(config=config),
                        namespace="certbound"),
    ])
    clusters = "".join([
        *(CLUSTER.format(name=svc, port=stack.ports.echo, options="") for svc in ("docs", "api")),
        CLUSTER.format(name="certbound", port=grpc, options=HTTP2),
    ])
    envoy_config = work / "envoy.yaml"
    envoy_config.write_text(
        f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n"
        f"static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}")
    envoy = find_envoy()
    stack._run("envoy-kong-import-validate", [envoy, "--mode", "validate", "-c", envoy_config],
               env=stack._env_for_envoy())
    proc = stack._spawn("envoy-kong-import", [envoy, "-c", envoy_config, "--concurrency", "1",
                                              "--disable-hot-restart"],
                        env=stack.envoy_env(), drop_env=stack.envoy_drop_env())
    wait_until("envoy-kong-import /ready", lambda: http_get(admin, "/ready") == (200, b"LIVE\n"), 30, proc=proc)
    for port in (listen, module):
        wait_until("envoy-kong-import listener", lambda p=port: port_open(p), 10, proc=proc)
    return {"ext_authz": listen, "module": module}


def call(port: int, method: str, path: str, host: str, case: str) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers={"host": host, "x-case": case})
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def access_log_lines(stack, face: str, cases: set[str]) -> dict[str, str]:
    """The access-log line of each case on `face`'s listener, waiting (bounded) for Envoy to
    write them."""
    log = stack.logs / "envoy-kong-import.log"
    deadline = time.monotonic() + 10
    while True:
        found = {}
        for line in log.read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) > 1 and words[0] == face and words[1].removeprefix("case=") in cases:
                found[words[1].removeprefix("case=")] = line
        if len(found) == len(cases) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize("face", FACES)
def test_imported_rules_give_kongs_decision_for_every_route_with_no_per_route_config(stack, imported, face):
    rows = read_decisions()
    assert len(rows) >= 20
    run = f"{face}-{time.time_ns()}"
    results = {}
    for i, (method, host, path, decision) in enumerate(rows):
        case = f"{run}-{i}"
        results[case] = (method, host, path, decision, call(imported[face], method, path, host, case))
    logs = access_log_lines(stack, face, set(results))
    for case, (method, host, path, decision, resp) in results.items():
        what = f"{face}: {method} {host}{path} (Kong: {decision})"
        line = logs.get(case)
        assert line is not None, f"{what}: no access-log line"
        if decision == "open":
            # Kong serves it without authentication; certbound says so, by its rule.
            assert resp.status == 200 and resp.upstream is not None, (what, resp)
            assert "reason=unauthenticated" in line, (what, line)
        elif decision == "deny":
            # Kong answers 404; certbound refuses it although the operator's catch-all routes it.
            assert resp.status == 403 and resp.upstream is None, (what, resp)
            assert "reason=no_matching_route" in line, (what, line)
        else:
            # Protected: no token, so the policy Kong's plugin maps to challenges it.
            assert resp.status == 401 and resp.upstream is None, (what, resp)
            assert resp.www_authenticate is not None and resp.www_authenticate.startswith("Bearer "), (what, resp)
            assert f"policy={decision} reason=missing_token" in line, (what, line)
