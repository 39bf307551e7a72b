"""Mesh identity binding through the real Envoy, on both faces.

Envoy's "mesh" listener is an Istio inbound sidecar of the workload
spiffe://cluster.local/ns/api/sa/api: mesh mTLS with SVIDs from the suite's mesh CA,
`forward_client_cert_details: APPEND_FORWARD` and `set_current_client_cert_details: {subject,
uri, dns}` as Istio sets them, and ext_authz as Istio's CUSTOM gRPC provider generates it (no
peer certificate). certbound "mesh" reads the element the sidecar appended
([proof_of_possession_mtls_from_mesh], local_spiffe_id = the api workload, allowed_spiffe_ids =
the shop namespace). Each workload obtained its token from the suite's IdP over mTLS with its
SVID (RFC 8705), so the token is bound to it.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import re

import pytest

from stack import AUDIENCE_RS, MESH_LOCAL_ID, Response

A_ID = "spiffe://cluster.local/ns/shop/sa/checkout"


@pytest.fixture(scope="module")
def tokens(stack) -> dict[str, str]:
    """Each workload's own token, bound to its SVID."""
    return {w: stack.get_token(client, AUDIENCE_RS)
            for w, client in (("mesh-a", "checkout-app"), ("mesh-b", "cart-app"), ("mesh-c", "report-app"))}


def der_hex(stack, workload: str) -> str:
    """What Envoy writes as the element's Hash: hex SHA-256 of the SVID's DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    cert = x509.load_pem_x509_certificate((stack.pki / f"{workload}.pem").read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def assert_allowed(resp: Response, sub: str) -> None:
    assert resp.status == 200, resp
    assert resp.upstream is not None, f"200 but not from the echo upstream: {resp}"
    assert resp.upstream_headers.get("x-consumer-sub") == sub, resp.upstream_headers


def assert_refused(resp: Response, description: str) -> None:
    """401 invalid_token naming why: the static error_description of the deny reason."""
    assert resp.status == 401, resp
    www = resp.www_authenticate or ""
    assert 'error="invalid_token"' in www, resp
    assert f'error_description="{description}"' in www, www
    assert resp.upstream is None, resp


def assert_not_allowed_identity(resp: Response) -> None:
    """403 without a challenge: the caller's SPIFFE ID is not on the list (mesh_identity_not_allowed)."""
    assert resp.status == 403, resp
    assert resp.www_authenticate is None, resp
    assert resp.json() == {"message": "Forbidden"}, resp
    assert resp.upstream is None, resp


MISMATCH = "certificate does not match access token"
NOT_LOCAL = "client certificate not attested by the local sidecar"


def test_mesh_a_workloads_token_with_its_own_svid_is_allowed_through_the_sidecar(stack, tokens, face):
    resp = stack.call_envoy_mesh("mesh-a", tokens["mesh-a"], face=face)
    assert_allowed(resp, "checkout-app")
    # Envoy really appended the element certbound read: By is the local workload, Hash and URI A's.
    xfcc = resp.upstream_headers.get("x-forwarded-client-cert", "")
    assert xfcc.startswith(f"By={MESH_LOCAL_ID};Hash={der_hex(stack, 'mesh-a')};"), xfcc
    assert f"URI={A_ID}" in xfcc, xfcc


def test_mesh_workload_as_token_presented_from_workload_b_is_refused(stack, tokens, face):
    # B is in the allowed namespace: only the binding refuses it.
    assert_allowed(stack.call_envoy_mesh("mesh-b", tokens["mesh-b"], face=face), "cart-app")
    assert_refused(stack.call_envoy_mesh("mesh-b", tokens["mesh-a"], face=face), MISMATCH)


def test_mesh_a_workload_outside_the_allowed_spiffe_ids_is_refused_even_with_its_own_token(stack, tokens, face):
    assert_not_allowed_identity(stack.call_envoy_mesh("mesh-c", tokens["mesh-c"], face=face))
    assert_not_allowed_identity(stack.call_envoy_mesh("mesh-c", tokens["mesh-a"], face=face))


def test_mesh_an_xfcc_header_the_workload_forges_does_not_change_the_outcome(stack, tokens, face):
    a_hash = der_hex(stack, "mesh-a")
    forged_as_a = [
        # A's element as a sidecar would write it for A, with and without the local By.
        f"By={MESH_LOCAL_ID};Hash={a_hash};Subject=\"\";URI={A_ID}",
        f"Hash={a_hash};Subject=\"\";URI={A_ID}",
        f"By=spiffe://cluster.local/ns/istio-system/sa/gw;Hash={a_hash};URI={A_ID}",
    ]
    for forged in forged_as_a:
        # B with A's token: still refused (as a forgery of the local element, or on the binding).
        resp = stack.call_envoy_mesh("mesh-b", tokens["mesh-a"], {"x-forwarded-client-cert": forged}, face=face)
        assert resp.status == 401 and resp.upstream is None, (forged, resp)
        assert re.search(f'error_description="({MISMATCH}|{NOT_LOCAL})"', resp.www_authenticate or ""), resp
        # C claiming A's identity: still not on the list, or refused as a forgery.
        resp = stack.call_envoy_mesh("mesh-c", tokens["mesh-a"], {"x-forwarded-client-cert": forged}, face=face)
        assert resp.status in (401, 403) and resp.upstream is None, (forged, resp)
    # The same forgery sent twice (Envoy joins the copies before appending its own element).
    twice = [("x-forwarded-client-cert", forged_as_a[1]), ("x-forwarded-client-cert", forged_as_a[1])]
    assert_refused(stack.call_envoy_mesh("mesh-b", tokens["mesh-a"], twice, face=face), MISMATCH)
    # A sending a header naming B changes nothing either: still A, still allowed.
    b_claim = f"Hash={der_hex(stack, 'mesh-b')};Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/cart"
    assert_allowed(stack.call_envoy_mesh("mesh-a", tokens["mesh-a"], {"x-forwarded-client-cert": b_claim},
                                         face=face), "checkout-app")


def _issue_svid(stack, name: str, uri: str) -> None:
    """A workload certificate from the mesh CA with exactly this URI SAN (NAME.pem, NAME-key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = stack.pki
    ca_cert = x509.load_pem_x509_certificate((pki / "mesh-ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "mesh-ca-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certbound e2e")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (pki / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / f"{name}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.mark.parametrize("shape", ["comma-by-hash", "comma-hash", "semicolon-uri"])
def test_mesh_a_peer_svid_whose_uri_san_forges_an_element_never_passes_as_workload_a(stack, tokens, shape, face):
    a_hash = der_hex(stack, "mesh-a")
    uri = {
        "comma-by-hash": f"spiffe://cluster.local/ns/shop/sa/evil,By={MESH_LOCAL_ID};Hash={a_hash};URI={A_ID}",
        "comma-hash": f"spiffe://cluster.local/ns/shop/sa/evil,Hash={a_hash};URI={A_ID}",
        "semicolon-uri": f"spiffe://cluster.local/ns/batch/sa/evil;URI={A_ID}",
    }[shape]
    name = f"mesh-forger-{shape}"
    _issue_svid(stack, name, uri)
    # Envoy really wrote the forged text into the header (/healthz skips the check).
    echo = stack._send(http.client.HTTPSConnection("127.0.0.1", stack.envoy_port("mesh", face), timeout=10,
                                                   context=stack.mesh_tls_context(name)),
                       "GET", "/healthz", [("host", "api.api.svc.cluster.local")])
    assert uri in echo.upstream_headers.get("x-forwarded-client-cert", ""), echo
    resp = stack.call_envoy_mesh(name, tokens["mesh-a"], face=face)
    assert resp.status in (401, 403) and resp.upstream is None, resp
