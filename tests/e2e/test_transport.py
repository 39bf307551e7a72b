"""certbound's gRPC listener with TLS and client-certificate authentication, through real Envoy.

The "peer" certbound serves gRPC over TLS ([grpc_tls] with client_ca_file = grpc-client-ca.pem);
Envoy's certbound_peer cluster reaches it with an UpstreamTlsContext that presents envoy-grpc.pem.
Decisions flow as before; a caller without Envoy's client certificate never gets an HTTP/2 session.
"""

from __future__ import annotations

import socket
import ssl
from typing import Optional

from test_e2e import alice_rs, assert_allowed, assert_invalid_token, bob_rs  # noqa: F401 (fixtures)

# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers with its SETTINGS.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS = 0x04


def h2_over_tls(stack, cert: Optional[str]) -> Optional[bytes]:
    """Opens TLS (ALPN h2) to the peer certbound's gRPC port, presenting `cert` (a pki.sh leaf)
    or nothing, sends the HTTP/2 preface and returns the first frame header the server sends;
    None when the TLS handshake is refused (TLS 1.3 reports a missing or untrusted client
    certificate with an alert after the client's own handshake completes, so on first read)."""
    ctx = ssl.create_default_context(cafile=str(stack.pki / "server-ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    if cert:
        ctx.load_cert_chain(str(stack.pki / f"{cert}.pem"), str(stack.pki / f"{cert}-key.pem"))
    port = stack.certbound_grpc_port("peer")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(H2_PREFACE)
                head = tls.recv(9)
                return head or None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None


def test_envoy_reaches_certbound_over_grpc_tls_with_its_client_certificate(stack, alice_rs, bob_rs):
    before = stack.envoy_stat("cluster.certbound_peer.ssl.handshake") or 0
    assert_allowed(stack.call_envoy_mtls("alice", alice_rs), "alice-app")
    assert_invalid_token(stack.call_envoy_mtls("alice", bob_rs))
    # The checks went over TLS: Envoy's cluster to certbound completed handshakes.
    assert (stack.envoy_stat("cluster.certbound_peer.ssl.handshake") or 0) >= max(before, 1)
    assert stack.grpc_health("peer") == "healthy"


def test_grpc_tls_answers_envoys_client_certificate_only(stack):
    head = h2_over_tls(stack, "envoy-grpc")
    assert head is not None and len(head) == 9 and head[3] == SETTINGS, head


def test_grpc_tls_refuses_a_caller_without_a_client_certificate(stack):
    assert h2_over_tls(stack, None) is None


def test_grpc_tls_refuses_a_client_certificate_from_another_ca(stack):
    # alice's certificate is good for the API, but not issued by the CA that vouches for Envoy.
    assert h2_over_tls(stack, "alice") is None
    assert h2_over_tls(stack, "untrusted") is None


def test_grpc_tls_listener_serves_no_plaintext(stack):
    port = stack.certbound_grpc_port("peer")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(H2_PREFACE)
        try:
            head = raw.recv(9)
        except ConnectionResetError:
            head = b""
    assert len(head) < 9 or head[3] != SETTINGS, head
