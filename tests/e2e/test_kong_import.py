"""`certbound import-kong` end to end: the Envoy routes it writes, loaded into the real Envoy, in
front of a certbound serving the certbound.toml it writes, protect exactly what Kong protects.

Kong picks the most specific route (more match fields, then the longest path); Envoy the first
one that matches. The decK file lists the open routes first, so routes written in file order
would let every request skip authentication.
"""

from __future__ import annotations

import http.client
import subprocess
import textwrap
from pathlib import Path

import pytest

from stack import ROOT, Response, find_envoy, free_ports, http_get, port_open, wait_until


def kong_file(issuer: str) -> str:
    plugin = textwrap.indent(textwrap.dedent(f"""\
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              proof_of_possession_mtls: strict
        """), " " * 8)
    return textwrap.dedent("""\
        _format_version: "3.0"
        services:
          - name: api
            url: http://api.internal
            routes:
              # The issue's example: `/` without a plugin listed before `/admin` with one.
              - name: docs
                paths: [/]
              - name: admin
                paths: [/admin]
        @@PLUGIN@@
              # GET public, POST protected, on one path.
              - name: items-read
                paths: [/items]
                methods: [GET]
              - name: items-write
                paths: [/items]
                methods: [POST]
        @@PLUGIN@@
              # Only the host tells these two apart.
              - name: public-site
                paths: [/site]
                hosts: [public.example]
              - name: private-site
                paths: [/site]
                hosts: [private.example]
        @@PLUGIN@@
        """).replace("@@PLUGIN@@\n", plugin)


ENVOY = """\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: imported
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: imported
          normalize_path: true
          merge_slashes: true
          route_config:
            name: imported
            virtual_hosts:
            - name: imported
              domains: ["*"]
{routes}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{ code: 503 }}
              grpc_service:
                envoy_grpc: {{ cluster_name: certbound }}
                timeout: 2s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: api
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: api
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo} }} }} }}
  - name: certbound
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: certbound
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {grpc} }} }} }}
"""


@pytest.fixture(scope="module")
def imported(stack):
    """Envoy on the imported routes, certbound on the imported configuration; the listener port."""
    work = stack.work / "kong-import"
    work.mkdir(exist_ok=True)
    deck = work / "kong.yaml"
    deck.write_text(kong_file(stack.issuer))
    out = work / "out"
    r = subprocess.run([str(stack.certbound_bin), "import-kong", str(deck), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    listen, admin, grpc, cb_admin = free_ports(4)

    # The imported configuration as written, plus what a decK file cannot say: where to listen
    # and the suite's IdP CA.
    config = out / "certbound.toml"
    config.write_text(
        f'grpc_listen = "127.0.0.1:{grpc}"\nadmin_listen = "127.0.0.1:{cb_admin}"\n'
        f'idp_ca_certificates = ["{stack.pki / "server-ca.pem"}"]\n' + config.read_text())
    proc = stack._spawn("certbound-kong-import", [stack.certbound_bin, "serve", "--config", config],
                        drop_env=("CERTBOUND_BIN",))
    wait_until("certbound-kong-import /readyz", lambda: http_get(cb_admin, "/readyz")[0] == 200, 30, proc=proc)

    lines = (out / "envoy-routes.yaml").read_text().splitlines()
    start = lines.index("routes:")
    routes = "\n".join(" " * 14 + line for line in ["routes:", *lines[start + 1:]])
    envoy_config = work / "envoy.yaml"
    envoy_config.write_text(ENVOY.format(admin=admin, listen=listen, routes=routes, echo=stack.ports.echo,
                                         grpc=grpc))
    envoy = find_envoy()
    stack._run("envoy-kong-import-validate", [envoy, "--mode", "validate", "-c", envoy_config])
    proc = stack._spawn("envoy-kong-import", [envoy, "-c", envoy_config, "--concurrency", "1",
                                              "--disable-hot-restart"])
    wait_until("envoy-kong-import /ready", lambda: http_get(admin, "/ready") == (200, b"LIVE\n"), 30, proc=proc)
    wait_until("envoy-kong-import listener", lambda: port_open(listen), 10, proc=proc)
    return listen


def call(port: int, method: str, path: str, host: str = "127.0.0.1") -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers={"host": host})
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def assert_needs_a_token(resp: Response) -> None:
    assert resp.status == 401, resp
    assert resp.upstream is None, resp
    assert resp.www_authenticate is not None and resp.www_authenticate.startswith("Bearer "), resp


def assert_open(resp: Response) -> None:
    assert resp.status == 200 and resp.upstream is not None, resp


def test_imported_routes_keep_a_longer_protected_path_behind_authentication(imported):
    assert_needs_a_token(call(imported, "GET", "/admin"))
    assert_needs_a_token(call(imported, "GET", "/admin/x"))
    assert_open(call(imported, "GET", "/"))
    assert_open(call(imported, "GET", "/guide"))


def test_imported_routes_protect_by_method_as_kong_does(imported):
    assert_open(call(imported, "GET", "/items"))
    assert_needs_a_token(call(imported, "POST", "/items"))


def test_imported_routes_protect_by_host_as_kong_does(imported):
    assert_open(call(imported, "GET", "/site", host="public.example"))
    assert_needs_a_token(call(imported, "GET", "/site", host="private.example"))
    # Kong matches hosts without their port and in any case.
    assert_needs_a_token(call(imported, "GET", "/site", host="PRIVATE.example:8080"))
