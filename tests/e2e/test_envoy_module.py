"""What only the module face has: certbound inside Envoy 1.40 as a dynamic module (crates/envoy,
libcertbound_envoy.so), on the suite's shared stack.

Every decision (status, challenge, body, upstream headers, per-route policy, the disabled health
route, revocation, DPoP with Redis, introspection, XFCC) is proven on both faces by the
parametrized tests of test_e2e.py and test_dpop.py: each Envoy listener has a module_<name> twin
whose filter loads the same certbound-<mode>.toml as the ext_authz listener's certbound instance.
This file holds what has no ext_authz counterpart: the ABI version check at load, a
configuration refused with certbound's own error text, the request body held with its request
while a check waits on the network, and the encoding of the peer certificate digest Envoy hands
the module.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

from stack import AUDIENCE_RS, find_envoy, jwt_parts, render, wait_until, x5t_s256
from test_e2e import _issue_client, alice_rs  # noqa: F401 (fixture)

# One listener whose filter loads @@FILTER_CONFIG@@: what `envoy --mode validate` must refuse.
VALIDATE_YAML = """\
static_resources:
  listeners:
  - name: module
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: module
          route_config:
            virtual_hosts:
            - name: module
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200 }
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
"""


def envoy_log(stack) -> str:
    return (stack.logs / "envoy.log").read_text(errors="replace")


def test_envoy_loads_the_module_with_the_matching_abi_version(stack):
    log = envoy_log(stack)
    assert "Dynamic module ABI version v0.2.0 matched." in log, log[-3000:]
    # CI fails on Envoy's "deprecated" ABI warning: a library built for another Envoy.
    assert "deprecated" not in log.lower(), [l for l in log.splitlines() if "deprecated" in l.lower()]
    assert "grpc_listen, admin_listen and [grpc_tls] are ignored inside Envoy" in log


def test_an_invalid_configuration_makes_envoy_refuse_the_filter_with_certbounds_error(stack):
    template = stack.work / "module-validate.yaml.tmpl"
    template.write_text(VALIDATE_YAML)
    bad = stack.work / "module-bad.toml"
    bad.write_text((stack.work / "certbound-header.toml").read_text() + "\nno_such_key = 1\n")
    for name, filter_config, says in (
        ("module-empty.yaml", "", "filter_config (the path of a certbound configuration file) is empty"),
        ("module-missing.yaml", "/nonexistent/certbound.toml", "is not a readable file"),
        ("module-bad.yaml", str(bad), "no_such_key"),
    ):
        config = render(template, stack.work / name, {"FILTER_CONFIG": filter_config})
        result = subprocess.run([find_envoy(), "--mode", "validate", "-c", str(config)],
                                env=stack._env_for_envoy(), capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert says in output, output[-3000:]


def test_a_request_body_waits_with_its_request_for_the_decision(stack):
    """A check that must ask the network holds its request; the body that arrives meanwhile must
    be held too: a body hook that let it pass would resume the request and send it upstream
    before any decision. The certificate names an OCSP "responder" that accepts connections and
    never answers, so the "strict" policy's check waits out its revocation timeout and denies."""
    with socket.socket() as wedged:
        wedged.bind(("127.0.0.1", 0))
        wedged.listen(8)  # the kernel completes handshakes; nobody ever reads or answers
        _issue_client(stack, "held", [], ["held.clients.test"],
                      ocsp_url=f"http://127.0.0.1:{wedged.getsockname()[1]}/")
        token = stack.get_token("bob-app", AUDIENCE_RS, cert="held")
        assert jwt_parts(token)[1]["cnf"]["x5t#S256"] == x5t_s256(stack.pki / "held.pem")
        resp = stack.call_envoy_plain({"x-client-cert": stack.cert_url_encoded("held"),
                                       "content-type": "application/json"},
                                      token, path="/strict/held-body", method="POST",
                                      body=b'{"amount": 100}' * 64, face="module")
    assert resp.status == 401, resp
    assert 'error_description="client certificate revocation status unknown"' in (resp.www_authenticate or ""), resp
    # The echo upstream logs every request it serves: give a wrongly released one time to land.
    time.sleep(0.5)
    echo_log = stack._proc("echo").log.read_text(errors="replace")
    assert "/strict/held-body" not in echo_log, "the upstream received a request that was denied"


def test_the_peer_certificate_digest_envoy_hands_the_module_is_the_openssl_thumbprint(stack, alice_rs):
    """Over Envoy's own mTLS the module binds with the connection.sha256_peer_certificate_digest
    attribute; the x5t it reports (access-log metadata) is the RFC 8705 thumbprint openssl
    computes for alice's certificate, which the IdP put into the token's cnf."""
    pem = stack.pki / "alice.pem"
    openssl = subprocess.run(
        ["bash", "-c", f"openssl x509 -in '{pem}' -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert jwt_parts(alice_rs)[1]["cnf"]["x5t#S256"] == openssl
    marker = f"/peer-digest-{time.time_ns()}"
    resp = stack.call_envoy_mtls("alice", alice_rs, path=marker, face="module")
    assert resp.status == 200 and resp.upstream_headers.get("x-consumer-sub") == "alice-app", resp
    line = wait_until("the access log line", lambda: next(
        (l for l in envoy_log(stack).splitlines() if f"{marker} " in l), None), 10)
    assert re.search(r"decision=allow reason=bound sub=alice-app x5t=(\S+)", line).group(1) == openssl, line


def test_module_listeners_run_in_envoy_without_any_certbound_variable(stack):
    """The module reads CERTBOUND_* overrides as `certbound serve` does: the harness's own
    (CERTBOUND_BIN) must never reach Envoy, where it would be an unknown key."""
    pid = stack.pids()["envoy"]
    with open(f"/proc/{pid}/environ", "rb") as fh:
        names = [item.split(b"=", 1)[0].decode() for item in fh.read().split(b"\0") if item]
    assert "ENVOY_DYNAMIC_MODULES_SEARCH_PATH" in names
    assert not [n for n in names if n.startswith("CERTBOUND_")], names
