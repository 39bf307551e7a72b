"""certbound inside Envoy 1.40: the dynamic module (crates/envoy, libcertbound_envoy.so) running
certbound's own configuration, pipeline and answers, against the suite's real IdP, PKI and OCSP
responder.

    client (from 127.0.0.2, the trusted hop) --x-client-cert--> Envoy "module" listener
        --dynamic module "certbound" (filter_config: certbound-header.toml)--> echo upstream

Routes: /strict/ carries a per-route `DynamicModuleFilterPerRoute` naming policy "strict"
(revocation STRICT); /healthz turns the filter off with `envoy.config.route.v3.FilterConfig
{disabled: true}`; everything else uses the default policy. The configuration file is the one the
ext_authz instance "header" of the suite serves, so both faces run the same policies.

This module builds the library itself (`cargo build --workspace --all-targets`) and starts only what it
needs: the PKI, the IdPs, the OCSP responder, the echo upstream and one Envoy.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from stack import (AUDIENCE_RS, ROOT, Ports, Response, Stack, find_envoy, http_get, jwt_parts,  # noqa: F401
                   port_open, render, wait_until)

MODULE_DIR = ROOT / "target" / "debug"
ENVOY_YAML = """\
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: @@ADMIN_PORT@@ }

static_resources:
  listeners:
  - name: module
    address:
      socket_address: { address: 127.0.0.1, port_value: @@PLAIN_PORT@@ }
    filter_chains:
    - filters:
      - &hcm
        name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: module
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "access %REQ(:PATH)% -> %RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS% policy=%DYNAMIC_METADATA(certbound:policy)% reason=%DYNAMIC_METADATA(certbound:reason)% sub=%DYNAMIC_METADATA(certbound:sub)%\\n"
          route_config:
            name: module
            virtual_hosts:
            - name: module
              domains: ["*"]
              routes:
              - name: health
                match: { path: "/healthz" }
                route: { cluster: echo }
                typed_per_filter_config:
                  certbound:
                    "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
                    disabled: true
              - name: strict
                match: { prefix: "/strict/" }
                route: { cluster: echo }
                typed_per_filter_config:
                  certbound:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
                    dynamic_module_config: { name: certbound_envoy }
                    filter_name: certbound
                    filter_config:
                      "@type": type.googleapis.com/google.protobuf.StringValue
                      value: strict
              - name: default
                match: { prefix: "/" }
                route: { cluster: echo }
          http_filters:
          - name: certbound
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: { name: certbound_envoy, metrics_namespace: certbound }
              filter_name: certbound
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: "@@FILTER_CONFIG@@"
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: module_mtls
    address:
      socket_address: { address: 127.0.0.1, port_value: @@MTLS_PORT@@ }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: "@@PKI@@/server.pem" }
              private_key: { filename: "@@PKI@@/server-key.pem" }
            validation_context:
              trusted_ca: { filename: "@@PKI@@/client-ca-bundle.pem" }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: module_mtls
          route_config:
            name: module_mtls
            virtual_hosts:
            - name: module_mtls
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: echo }
          http_filters:
          - name: certbound
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: { name: certbound_envoy, metrics_namespace: certbound }
              filter_name: certbound
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: "@@PEER_CONFIG@@"
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: @@ECHO_PORT@@ } } }
"""


class ModuleStack:
    """The suite's PKI and echo upstream (through Stack, so every process is ended by PID), plus
    one Envoy that loads the module."""

    def __init__(self) -> None:
        self.base = Stack()
        self.envoy_log = Path()
        self.certbound_toml = Path()
        self.peer_toml = Path()

    def start(self) -> "ModuleStack":
        st = self.base
        st._stopped = False  # stop() below ends whatever was started, also on failure
        try:
            st._prepare_dirs()
            st.ports = Ports.allocate()
            st.issuer = f"https://127.0.0.1:{st.ports.idp}"
            st.rogue_issuer = f"https://127.0.0.1:{st.ports.rogue_idp}"
            st._start_pki()
            st._start_ocsp()
            st._start_idps()
            st._start_echo()
            self.certbound_toml = st.certbound_config("header")
            self.peer_toml = st.certbound_config("peer")
            config = self.render("module-envoy.yaml", str(self.certbound_toml))
            st._run("module-envoy-validate", [find_envoy(), "--mode", "validate", "-c", config], env=self.env())
            proc = st._spawn("module-envoy", [
                find_envoy(), "-c", config, "--concurrency", "1", "--log-level", "info",
                "--disable-hot-restart",
            ], env=self.env(), drop_env=[k for k in os.environ if k.startswith("CERTBOUND_")])
            self.envoy_log = proc.log
            wait_until("module envoy /ready", lambda: http_get(st.ports.envoy_admin, "/ready") == (200, b"LIVE\n"),
                       30, proc=proc)
            for port in (st.ports.envoy_plain, st.ports.envoy_mtls):
                wait_until(f"module listener {port}", lambda p=port: port_open(p), 10, proc=proc)
        except BaseException:
            st.dump_logs()
            st.stop()
            raise
        return self

    def stop(self) -> None:
        self.base.stop()

    @staticmethod
    def env() -> dict:
        # Envoy finds lib<name>.so for `dynamic_module_config.name` in this directory. The
        # module reads CERTBOUND_* overrides as `certbound serve` does, so none of the harness's
        # own (CERTBOUND_BIN) may leak into Envoy's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTBOUND_")}
        return {**env, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(MODULE_DIR)}

    def render(self, name: str, filter_config: str) -> Path:
        st = self.base
        template = st.work / f"{name}.tmpl"
        template.write_text(ENVOY_YAML)
        return render(template, st.work / name, {
            "ADMIN_PORT": st.ports.envoy_admin, "PLAIN_PORT": st.ports.envoy_plain,
            "MTLS_PORT": st.ports.envoy_mtls, "ECHO_PORT": st.ports.echo, "PKI": st.pki,
            "FILTER_CONFIG": filter_config, "PEER_CONFIG": self.peer_toml,
        })

    def call(self, path: str = "/", headers: dict | None = None) -> Response:
        # From 127.0.0.2: the configuration's trusted_ips, the hop allowed to set the header.
        conn = http.client.HTTPConnection("127.0.0.1", self.base.ports.envoy_plain, timeout=10,
                                          source_address=("127.0.0.2", 0))
        return Stack._send(conn, "GET", path, list((headers or {}).items()))

    def call_mtls(self, cert: str, token: str, path: str = "/orders") -> Response:
        conn = http.client.HTTPSConnection("127.0.0.1", self.base.ports.envoy_mtls, timeout=10,
                                           context=self.base.tls_context(cert))
        return Stack._send(conn, "GET", path, [("authorization", f"Bearer {token}")])

    def bound(self, token: str, cert: str, path: str = "/orders") -> Response:
        return self.call(path, {"authorization": f"Bearer {token}",
                                "x-client-cert": self.base.cert_url_encoded(cert)})

    def prometheus(self) -> str:
        status, body = http_get(self.base.ports.envoy_admin, "/stats/prometheus")
        assert status == 200
        return body.decode()

    def decisions(self, decision: str, reason: str) -> int:
        match = re.search(r'^envoy_certbound_decisions\{decision="%s",reason="%s"\} (\d+)$' % (decision, reason),
                          self.prometheus(), re.M)
        return int(match.group(1)) if match else 0

    def log_text(self) -> str:
        return self.envoy_log.read_text(errors="replace")


@pytest.fixture(scope="module")
def module() -> Iterator[ModuleStack]:
    # As scripts/e2e.sh builds (every target, the test build's dependency features): nearly free
    # after it, where `-p certbound-envoy` alone would rebuild dozens of crates.
    build = subprocess.run(["cargo", "build", "--locked", "--workspace", "--all-targets"], cwd=ROOT,
                           capture_output=True, text=True,
                           timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    assert (MODULE_DIR / "libcertbound_envoy.so").is_file()
    ms = ModuleStack().start()
    try:
        yield ms
    finally:
        ms.stop()


@pytest.fixture(scope="module")
def alice_token(module) -> str:
    token = module.base.get_token("alice-app", AUDIENCE_RS)
    assert jwt_parts(token)[1]["cnf"]["x5t#S256"] == module.base.thumbprint("alice")
    return token


# --- loading -------------------------------------------------------------------------------------

def test_envoy_loads_the_module_with_the_matching_abi_version(module):
    log = module.log_text()
    assert "Dynamic module ABI version v0.2.0 matched." in log, log[-3000:]
    assert "deprecated" not in log.lower(), [l for l in log.splitlines() if "deprecated" in l.lower()]
    assert "grpc_listen, admin_listen and [grpc_tls] are ignored inside Envoy" in log


def test_an_invalid_configuration_makes_envoy_refuse_the_filter_with_certbounds_error(module):
    bad = module.base.work / "module-bad.toml"
    bad.write_text(module.certbound_toml.read_text() + "\nno_such_key = 1\n")
    for name, filter_config, says in (
        ("module-envoy-empty.yaml", "", "filter_config (the path of a certbound configuration file) is empty"),
        ("module-envoy-missing.yaml", "/nonexistent/certbound.toml", "is not a readable file"),
        ("module-envoy-bad.yaml", str(bad), "no_such_key"),
    ):
        config = module.render(name, filter_config)
        result = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(config)], env=module.env(),
                                capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert says in output, output[-3000:]


# --- the request path, as the ext_authz face answers it -------------------------------------------

def test_a_bound_token_with_its_certificate_is_allowed_and_the_upstream_gets_the_claims(module, alice_token):
    before = module.decisions("allow", "bound")
    resp = module.bound(alice_token, "alice")
    assert resp.status == 200, resp
    assert resp.upstream is not None, resp
    assert resp.upstream_headers.get("x-consumer-sub") == "alice-app", resp.upstream_headers
    wait_until("allow counted", lambda: module.decisions("allow", "bound") == before + 1, 10)
    wait_until("access log fields", lambda: re.search(
        r"access /orders -> 200 .*policy=default reason=bound sub=alice-app", module.log_text()), 10)


def test_a_stolen_token_with_another_certificate_is_denied_as_ext_authz_denies_it(module, alice_token):
    before = module.decisions("deny", "binding_mismatch")
    resp = module.bound(alice_token, "bob")
    assert resp.status == 401, resp
    assert resp.upstream is None
    assert resp.www_authenticate == (
        f'Bearer realm="127.0.0.1:{module.base.ports.envoy_plain}", error="invalid_token", '
        'error_description="certificate does not match access token"'), resp
    assert resp.header("content-type") == "application/json"
    assert resp.json() == {"message": "Unauthorized"}
    wait_until("deny counted", lambda: module.decisions("deny", "binding_mismatch") == before + 1, 10)
    wait_until("details", lambda: "details=certbound_binding_mismatch" in module.log_text(), 10)


def test_no_token_is_answered_with_a_bare_bearer_challenge(module):
    resp = module.call("/orders")
    assert resp.status == 401, resp
    assert resp.www_authenticate == f'Bearer realm="127.0.0.1:{module.base.ports.envoy_plain}"', resp
    assert resp.json() == {"message": "Unauthorized"}


def test_a_certificate_header_from_an_untrusted_hop_counts_as_none(module, alice_token):
    conn = http.client.HTTPConnection("127.0.0.1", module.base.ports.envoy_plain, timeout=10)
    resp = Stack._send(conn, "GET", "/orders", [("authorization", f"Bearer {alice_token}"),
                                                  ("x-client-cert", module.base.cert_url_encoded("alice"))])
    assert resp.status == 401, resp
    assert 'error_description="client certificate required"' in (resp.www_authenticate or ""), resp


def test_a_check_that_needs_the_network_holds_the_request_and_resumes_it(module):
    # dave's certificate names the OCSP responder: the first check waits for its answer on the
    # module's threads, then the scheduler resumes the stream on its worker.
    token = module.base.get_token("bob-app", AUDIENCE_RS, cert="dave")
    resp = module.bound(token, "dave", "/ocsp")
    assert resp.status == 200, resp
    assert resp.upstream_headers.get("x-consumer-sub") == "bob-app"


def test_a_request_body_waits_with_its_request_for_the_decision(module):
    # With the OCSP responder wedged, the "strict" policy's check waits revocation_wait (500 ms)
    # and then denies: the request is held all that time. Its body arrives meanwhile and must be
    # held too: a body hook that let it pass would resume the request and send it upstream
    # before any decision.
    token = module.base.get_token("bob-app", AUDIENCE_RS, cert="dave")
    module.base.pause("ocsp")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", module.base.ports.envoy_plain, timeout=10,
                                          source_address=("127.0.0.2", 0))
        resp = Stack._send(conn, "POST", "/strict/held-body",
                           [("authorization", f"Bearer {token}"),
                            ("x-client-cert", module.base.cert_url_encoded("dave")),
                            ("content-type", "application/json")],
                           body=b'{"amount": 100}' * 64)
    finally:
        module.base.resume("ocsp")
    assert resp.status == 401, resp
    assert 'error_description="client certificate revocation status unknown"' in (resp.www_authenticate or ""), resp
    time.sleep(0.5)
    echo_log = module.base._proc("echo").log.read_text(errors="replace")
    assert "/strict/held-body" not in echo_log, "the upstream received a request that was denied"


def test_a_revoked_certificate_is_denied_after_the_ocsp_answer(module):
    token = module.base.get_token("bob-app", AUDIENCE_RS, cert="eve")
    resp = module.bound(token, "eve", "/revoked")
    assert resp.status == 401, resp
    assert 'error_description="client certificate revoked"' in (resp.www_authenticate or ""), resp


def test_per_route_config_names_the_policy(module, alice_token):
    # alice's certificate names no OCSP responder or CRL: the default policy (IGNORE_CA_ERROR)
    # allows it, the route's policy "strict" (revocation STRICT) cannot, exactly as ext_authz does.
    assert module.bound(alice_token, "alice", "/default/thing").status == 200
    resp = module.bound(alice_token, "alice", "/strict/thing")
    assert resp.status == 401, resp
    assert 'error_description="client certificate revocation status unknown"' in (resp.www_authenticate or ""), resp
    wait_until("access log line", lambda: re.search(
        r"access /strict/thing -> 401 .*policy=strict reason=cert_revocation_unknown", module.log_text()), 10)


def test_a_route_with_the_filter_disabled_skips_it(module):
    resp = module.call("/healthz")
    assert resp.status == 200, resp
    assert resp.upstream is not None


def test_decisions_are_counted_in_envoys_prometheus_stats_without_total(module, alice_token):
    assert module.bound(alice_token, "alice", "/count").status == 200
    text = module.prometheus()
    assert re.search(r'^envoy_certbound_decisions\{decision="allow",reason="bound"\} \d+$', text, re.M), text[-2000:]
    assert "envoy_certbound_decisions_total" not in text


# --- Envoy's own mTLS: the peer certificate's digest ----------------------------------------------

def test_over_envoys_mtls_a_bound_token_passes_with_its_certificate_and_fails_with_another(module, alice_token):
    # The policy reads Envoy's connection.sha256_peer_certificate_digest; the allow proves it is
    # the SHA-256 of the DER the IdP bound the token to (cnf.x5t#S256).
    resp = module.call_mtls("alice", alice_token)
    assert resp.status == 200, resp
    assert resp.upstream_headers.get("x-consumer-sub") == "alice-app"
    stolen = module.call_mtls("bob", alice_token)
    assert stolen.status == 401, stolen
    assert 'error_description="certificate does not match access token"' in (stolen.www_authenticate or ""), stolen
