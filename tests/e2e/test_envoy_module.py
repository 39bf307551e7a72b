"""certbound's Envoy dynamic module (crates/envoy, libcertbound_envoy.so) loaded by the real Envoy 1.40.

Proves the hand-written ABI layer callback by callback, each through an effect Envoy shows:

    client --plain HTTP--> Envoy "module" listener --dynamic module "certbound"--> echo upstream
    client --mTLS--------> Envoy "module_mtls" listener (Envoy verifies the client) --> echo upstream

Routes on both listeners: /strict/ carries a per-route `DynamicModuleFilterPerRoute` naming policy
"strict"; /healthz turns the filter off with `envoy.config.route.v3.FilterConfig {disabled: true}`;
everything else has no per-route config ("default"). The filter is still the spike of
crates/envoy/src/filter.rs (x-spike-deny, x-spike-async, x-spike-panic).

This module builds the library itself (`cargo build -p certbound-envoy`) and needs only the PKI and
the echo upstream of the suite's stack, not certbound, the IdP or nginx.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from stack import (ROOT, Ports, Response, Stack, find_envoy, http_get, port_open,  # noqa: F401
                   render, wait_until)

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
                  inline_string: "access %REQ(:PATH)% -> %RESPONSE_CODE% details=%RESPONSE_CODE_DETAILS% policy=%DYNAMIC_METADATA(certbound:policy)%\\n"
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
      - *hcm

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

    def start(self) -> "ModuleStack":
        st = self.base
        st._stopped = False  # stop() below ends whatever was started, also on failure
        try:
            st._prepare_dirs()
            st.ports = Ports.allocate()
            st._start_pki()
            st._start_echo()
            config = self.render("module-envoy.yaml", "/etc/certbound/certbound.toml")
            st._run("module-envoy-validate", [find_envoy(), "--mode", "validate", "-c", config], env=self.env())
            proc = st._spawn("module-envoy", [
                find_envoy(), "-c", config, "--concurrency", "1", "--log-level", "info",
                "--disable-hot-restart",
            ], env=self.env())
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
        # Envoy finds lib<name>.so for `dynamic_module_config.name` in this directory.
        import os
        return {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(MODULE_DIR)}

    def render(self, name: str, filter_config: str) -> Path:
        st = self.base
        template = st.work / f"{name}.tmpl"
        template.write_text(ENVOY_YAML)
        return render(template, st.work / name, {
            "ADMIN_PORT": st.ports.envoy_admin, "PLAIN_PORT": st.ports.envoy_plain,
            "MTLS_PORT": st.ports.envoy_mtls, "ECHO_PORT": st.ports.echo, "PKI": st.pki,
            "FILTER_CONFIG": filter_config,
        })

    def call(self, path: str = "/", headers: dict | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.base.ports.envoy_plain, timeout=10)
        return Stack._send(conn, "GET", path, list((headers or {}).items()))

    def call_mtls(self, cert: str, path: str = "/", headers: dict | None = None) -> Response:
        conn = http.client.HTTPSConnection("127.0.0.1", self.base.ports.envoy_mtls, timeout=10,
                                           context=self.base.tls_context(cert))
        return Stack._send(conn, "GET", path, list((headers or {}).items()))

    def prometheus(self) -> str:
        status, body = http_get(self.base.ports.envoy_admin, "/stats/prometheus")
        assert status == 200
        return body.decode()

    def decisions(self, decision: str) -> int:
        match = re.search(r'^envoy_certbound_decisions\{decision="%s"\} (\d+)$' % decision, self.prometheus(), re.M)
        return int(match.group(1)) if match else 0

    def log_text(self) -> str:
        return self.envoy_log.read_text(errors="replace")


@pytest.fixture(scope="module")
def module() -> Iterator[ModuleStack]:
    build = subprocess.run(["cargo", "build", "-p", "certbound-envoy"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    assert (MODULE_DIR / "libcertbound_envoy.so").is_file()
    ms = ModuleStack().start()
    try:
        yield ms
    finally:
        ms.stop()


def openssl_sha256_hex(pem: Path) -> str:
    """`openssl x509 -outform DER | openssl dgst -sha256` of a certificate, as lower-case hex."""
    der = subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER"], capture_output=True,
                         check=True).stdout
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True).stdout
    return out.split()[0].decode().lower()


# --- loading -------------------------------------------------------------------------------------

def test_envoy_loads_the_module_with_the_matching_abi_version(module):
    log = module.log_text()
    assert "Dynamic module ABI version v0.2.0 matched." in log, log[-3000:]
    assert "deprecated" not in log.lower(), [l for l in log.splitlines() if "deprecated" in l.lower()]


def test_an_empty_filter_config_makes_envoy_refuse_the_configuration(module):
    config = module.render("module-envoy-empty.yaml", "")
    result = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(config)], env=module.env(),
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "certbound: filter_config is empty" in output, output[-3000:]


# --- request path --------------------------------------------------------------------------------

def test_deny_answers_401_with_the_challenge_and_body(module):
    before = module.decisions("deny")
    resp = module.call("/deny-me", {"x-spike-deny": "1"})
    assert resp.status == 401, resp
    assert resp.www_authenticate == 'Bearer error="invalid_token"'
    assert resp.body == b"denied"
    assert resp.upstream is None
    wait_until("deny counted", lambda: module.decisions("deny") == before + 1, 10)


def test_allow_reaches_the_upstream_with_the_policy_and_without_forged_headers(module):
    resp = module.call("/hello", {"x-certbound-policy": "forged", "x-certbound-peer-digest": "forged"})
    assert resp.status == 200, resp
    up = resp.upstream_headers
    assert up.get("x-certbound-policy") == "default"
    # Plain HTTP has no peer certificate: a client's own digest header must not pass.
    assert "x-certbound-peer-digest" not in up
    assert re.fullmatch(r"127\.0\.0\.1:\d+", up.get("x-certbound-source", "")), up


def test_per_route_config_names_the_policy(module):
    resp = module.call("/strict/thing")
    assert resp.status == 200, resp
    assert resp.upstream_headers.get("x-certbound-policy") == "strict"
    # Dynamic metadata certbound.policy, as an access log sees it.
    wait_until("access log line", lambda: re.search(r"access /strict/thing -> 200 .*policy=strict", module.log_text()), 10)


def test_a_route_with_the_filter_disabled_skips_it(module):
    resp = module.call("/healthz", {"x-spike-deny": "1"})
    assert resp.status == 200, resp
    assert "x-certbound-policy" not in resp.upstream_headers


def test_the_async_path_resumes_through_the_scheduler(module):
    resp = module.call("/slow", {"x-spike-async": "1"})
    assert resp.status == 200, resp
    assert resp.upstream_headers.get("x-certbound-async") == "done"
    assert resp.upstream_headers.get("x-certbound-policy") == "default"


def test_a_panic_in_a_hook_answers_500_and_envoy_lives_on(module):
    before = module.decisions("deny")
    resp = module.call("/boom", {"x-spike-panic": "1"})
    assert resp.status == 500, resp
    assert resp.body == b"internal error"
    wait_until("panic counted as a deny", lambda: module.decisions("deny") == before + 1, 10)
    assert module.call("/after").status == 200
    assert "certbound: panic in request_headers; failing closed" in module.log_text()


def test_mtls_peer_digest_is_the_openssl_sha256_of_the_client_certificate(module):
    resp = module.call_mtls("alice", "/strict/mtls")
    assert resp.status == 200, resp
    up = resp.upstream_headers
    assert up.get("x-certbound-peer-digest") == openssl_sha256_hex(module.base.pki / "alice.pem")
    assert up.get("x-certbound-policy") == "strict"


def test_decisions_are_counted_in_envoys_prometheus_stats(module):
    before = module.decisions("allow")
    assert module.call("/count").status == 200
    wait_until("allow counted", lambda: module.decisions("allow") == before + 1, 10)
    text = module.prometheus()
    assert re.search(r'^envoy_certbound_decisions\{decision="allow"\} \d+$', text, re.M), text[-2000:]
    assert "envoy_certbound_decisions_total" not in text
