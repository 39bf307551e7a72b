"""End-to-end tests of certbound against real peers (see stack.py for the topology).

Every request goes through real Envoy 1.40 ext_authz to a real certbound process; tokens come from a
real OIDC provider (oidc-provider 9) over real mutual TLS, so `cnf.x5t#S256` is the IdP's own work.

Expected answers (certbound's contract, Kong parity, RFC 6750 / RFC 8705):
  allowed        200, upstream sees x-consumer-sub = token sub
  no token       401, WWW-Authenticate: Bearer realm="<host>"   (no error=)
  bad token/cert 401, WWW-Authenticate: Bearer realm=..., error="invalid_token", ...; body {"message":"Unauthorized"}
  malformed      400, error="invalid_request"

Every test about a decision runs on both faces (the `face` fixture, ids test_x[ext_authz] and
test_x[module]): through ext_authz to certbound, and through the listener's module_* twin, where
certbound runs inside Envoy as a dynamic module loading the same configuration. Where the module
face legitimately differs (it exports decision counters only), the test asserts the difference.

Tests run in file order; the Prometheus cross-check and its module counterpart are last because
they compare the counters with every decision the session produced (Stack records each response).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import ssl
import subprocess
import time
import urllib.parse
from typing import Optional

import pytest

from stack import (AUDIENCE_ES, AUDIENCE_OTHER, AUDIENCE_RS, CERT_HEADER, CERTBOUND_MODES, Response,
                   jwt_parts, wait_until, x5t_s256)


# --- assertions ---------------------------------------------------------------------------------

def assert_allowed(resp: Response, sub: str) -> None:
    assert resp.status == 200, resp
    assert resp.upstream is not None, f"200 but not from the echo upstream: {resp}"
    assert resp.upstream_headers.get("x-consumer-sub") == sub, resp.upstream_headers


def assert_invalid_token(resp: Response) -> None:
    assert resp.status == 401, resp
    www = resp.www_authenticate
    assert www is not None and www.startswith("Bearer "), resp
    assert re.search(r'realm="[^"]*"', www), www
    assert 'error="invalid_token"' in www, www
    assert resp.json() == {"message": "Unauthorized"}, resp


def assert_invalid_request(resp: Response) -> None:
    assert resp.status == 400, resp
    assert resp.www_authenticate is not None and 'error="invalid_request"' in resp.www_authenticate, resp


def assert_denied(resp: Response) -> None:
    """Refused by someone on the path (nginx, Envoy or certbound): anything but a pass."""
    assert resp.status in (400, 401, 413, 431), resp
    assert resp.upstream is None, resp


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# --- tokens (one IdP round-trip each per session) --------------------------------------------------

@pytest.fixture(scope="session")
def alice_rs(stack) -> str:
    return stack.get_token("alice-app", AUDIENCE_RS)


@pytest.fixture(scope="session")
def alice_es(stack) -> str:
    return stack.get_token("alice-app", AUDIENCE_ES)


@pytest.fixture(scope="session")
def bob_rs(stack) -> str:
    return stack.get_token("bob-app", AUDIENCE_RS)


def claims_like(token: str, **changes) -> dict:
    """Claims of a real IdP token with a fresh jti, changed as asked (None deletes a claim)."""
    _, claims = jwt_parts(token)
    claims = {**claims, "jti": b64u(os.urandom(16))}
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


# --- the IdP really issues bound tokens (precondition of everything else) ---------------------------

def test_idp_issues_certificate_bound_jwts(stack, alice_rs, alice_es, bob_rs):
    for token, alg, cert, sub, aud in ((alice_rs, "RS256", "alice", "alice-app", AUDIENCE_RS),
                                       (alice_es, "ES256", "alice", "alice-app", AUDIENCE_ES),
                                       (bob_rs, "RS256", "bob", "bob-app", AUDIENCE_RS)):
        head, claims = jwt_parts(token)
        assert head["alg"] == alg and head["typ"] == "at+jwt" and head["kid"]
        assert claims["iss"] == stack.issuer and claims["aud"] == aud and claims["sub"] == sub
        # RFC 8705 §3.1, computed here independently of the IdP and of pki.sh
        assert claims["cnf"]["x5t#S256"] == x5t_s256(stack.pki / f"{cert}.pem") == stack.thumbprint(cert)


def test_certbound_thumbprint_cli_matches_openssl(stack):
    pem = stack.pki / "alice.pem"
    env = {k: v for k, v in os.environ.items() if k != "CERTBOUND_BIN"}  # certbound reads CERTBOUND_* as config
    out = subprocess.run([str(stack.certbound_bin), "thumbprint", str(pem)], capture_output=True, text=True,
                         timeout=10, env=env)
    assert out.returncode == 0, out.stderr
    openssl = subprocess.run(
        ["bash", "-c", f"openssl x509 -in '{pem}' -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == openssl.stdout.strip() == stack.thumbprint("alice")


# --- happy paths ------------------------------------------------------------------------------------

def test_alice_bound_token_through_nginx(stack, alice_rs, face):
    assert_allowed(stack.call_nginx("alice", alice_rs, face=face), "alice-app")


def test_alice_es256_token_through_nginx(stack, alice_es, face):
    assert_allowed(stack.call_nginx("alice", alice_es, face=face), "alice-app")


def test_rsa_client_certificate_chain(stack, face):
    # carol's certificate and CA are RSA: chain validation is not EC-only.
    assert_allowed(stack.call_nginx("carol", stack.get_token("carol-app", AUDIENCE_RS), face=face), "carol-app")


def test_peer_mode_through_envoy_mtls_listener(stack, alice_rs, alice_es, face):
    assert_allowed(stack.call_envoy_mtls("alice", alice_rs, face=face), "alice-app")
    assert_allowed(stack.call_envoy_mtls("alice", alice_es, face=face), "alice-app")


def test_lowercase_bearer_scheme_accepted(stack, alice_rs, face):
    # RFC 6750 §2.1 / RFC 7235: the auth scheme is case-insensitive.
    assert_allowed(stack.call_nginx("alice", alice_rs, scheme="bearer", face=face), "alice-app")


def test_direct_to_envoy_with_url_encoded_header(stack, alice_rs, face):
    # Control for the header tests below: a caller inside the trust boundary (WAF, another proxy)
    # sending the right certificate in the right format passes.
    assert_allowed(stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("alice")}, alice_rs, face=face), "alice-app")


# --- binding failures -------------------------------------------------------------------------------

def test_alice_token_with_bob_certificate(stack, alice_rs, face):
    assert_invalid_token(stack.call_nginx("bob", alice_rs, face=face))


def test_peer_mode_alice_token_with_bob_certificate(stack, alice_rs, face):
    assert_invalid_token(stack.call_envoy_mtls("bob", alice_rs, face=face))


def test_peer_mode_ignores_certificate_header(stack, alice_rs, face):
    # In peer mode only the TLS peer certificate counts; a header naming alice's cert is no proof.
    assert_invalid_token(stack.call_envoy_mtls("bob", alice_rs, {CERT_HEADER: stack.cert_url_encoded("alice")}, face=face))


def test_no_certificate_header(stack, alice_rs, face):
    assert_invalid_token(stack.call_envoy_plain(token=alice_rs, face=face))


def test_empty_certificate_header(stack, alice_rs, face):
    assert_invalid_token(stack.call_envoy_plain({CERT_HEADER: ""}, alice_rs, face=face))


@pytest.mark.parametrize("cert", ["expired", "untrusted"])
def test_header_certificate_failing_chain_validation(stack, cert, face):
    # The token is bound to exactly this certificate (the IdP binds whatever the TLS client shows),
    # so the thumbprint matches and only chain/validity validation can refuse it. nginx would not
    # let such a client in, hence straight to Envoy's plain listener.
    token = stack.get_token("bob-app", AUDIENCE_RS, cert=cert)
    assert jwt_parts(token)[1]["cnf"]["x5t#S256"] == stack.thumbprint(cert)
    assert_invalid_token(stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded(cert)}, token, face=face))


def _flip_signature_byte(pem: str) -> str:
    der = bytearray(base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----"))))
    der[-5] ^= 0x01  # inside the signature BIT STRING at the end of the certificate
    body = base64.b64encode(bytes(der)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not-percent-decodable", "bad-signature", "base64-der"])
def test_damaged_certificate_header(stack, alice_rs, damage, face):
    good = stack.cert_url_encoded("alice")
    value = {
        "garbage": "this-is-not-a-certificate",
        "truncated": good[: len(good) // 2],
        "not-percent-decodable": good.replace("%0A", "%Z0", 3),
        # alice's certificate with one signature bit flipped: same subject/key, broken chain
        "bad-signature": urllib.parse.quote(_flip_signature_byte(stack.cert_pem("alice")), safe="-"),
        # right certificate, wrong format for this (url_encoded) listener
        "base64-der": stack.cert_base64_der("alice"),
    }[damage]
    assert_invalid_token(stack.call_envoy_plain({CERT_HEADER: value}, alice_rs, face=face))


def test_duplicate_certificate_headers(stack, alice_rs, face):
    # Envoy joins duplicates with "," in the CheckRequest; a second copy must not slip through.
    cert = stack.cert_url_encoded("alice")
    assert_denied(stack.call_envoy_plain([(CERT_HEADER, cert), (CERT_HEADER, cert)], alice_rs, face=face))


# --- token failures ---------------------------------------------------------------------------------

def test_no_token(stack, face):
    resp = stack.call_nginx("alice", None, face=face)
    assert resp.status == 401, resp
    www = resp.www_authenticate
    assert www is not None and re.fullmatch(r'Bearer realm="localhost"', www), www  # RFC 6750 §3.1: no error=
    assert "error=" not in www


def test_bearer_garbage(stack, face):
    assert_invalid_token(stack.call_nginx("alice", "garbage", face=face))


def test_forged_signature(stack, alice_rs, face):
    head, payload, sig = alice_rs.split(".")
    raw = bytearray(b64u_decode(sig))
    raw[len(raw) // 2] ^= 0xFF
    assert_invalid_token(stack.call_nginx("alice", f"{head}.{payload}.{b64u(bytes(raw))}", face=face))


def test_tampered_payload(stack, alice_rs, face):
    # alice's signature over edited claims (sub changed): the signature no longer matches.
    head, _, sig = alice_rs.split(".")
    claims = claims_like(alice_rs, sub="admin")
    assert_invalid_token(stack.call_nginx("alice", f"{head}.{b64u(json.dumps(claims).encode())}.{sig}", face=face))


def test_alg_none(stack, alice_rs, face):
    header = b64u(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = b64u(json.dumps(claims_like(alice_rs)).encode())
    assert_invalid_token(stack.call_nginx("alice", f"{header}.{payload}.", face=face))


def test_wrong_issuer(stack, face):
    # A second, untrusted IdP: correct binding, valid signature by *its* key, wrong iss.
    token = stack.get_token("alice-app", AUDIENCE_RS, rogue=True)
    assert jwt_parts(token)[1]["iss"] == stack.rogue_issuer
    assert_invalid_token(stack.call_nginx("alice", token, face=face))


def test_wrong_audience(stack, face):
    # Trusted issuer, bound to alice, but issued for https://other.test (RFC 9068 §4: aud must match).
    token = stack.get_token("alice-app", AUDIENCE_OTHER)
    assert_invalid_token(stack.call_nginx("alice", token, face=face))


def test_unbound_token_refused_in_strict_mode(stack, face):
    token = stack.get_token("unbound-app", AUDIENCE_RS)
    assert "cnf" not in jwt_parts(token)[1]
    assert_invalid_token(stack.call_nginx("alice", token, face=face))


def test_minted_token_control(stack, alice_rs, face):
    # Tokens minted with the IdP's own key are acceptable when the claims are right; without this
    # control the minted failures below could pass for the wrong reason.
    now = int(time.time())
    token = stack.mint_token(claims_like(alice_rs, iat=now, exp=now + 300))
    assert_allowed(stack.call_nginx("alice", token, face=face), "alice-app")


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "no-cnf", "hex-thumbprint", "no-exp"])
def test_minted_invalid_tokens(stack, alice_rs, case, face):
    now = int(time.time())
    hex_x5t = b64u_decode(stack.thumbprint("alice")).hex()
    changes = {
        "expired": dict(iat=now - 7200, exp=now - 3600),                 # far beyond leeway = 60
        "not-yet-valid": dict(iat=now, nbf=now + 3600, exp=now + 7200),
        "no-cnf": dict(iat=now, exp=now + 300, cnf=None),                # strict mode needs a binding
        "hex-thumbprint": dict(iat=now, exp=now + 300, cnf={"x5t#S256": hex_x5t}),  # WSO2 docs bug
        "no-exp": dict(iat=now, exp=None),
    }[case]
    token = stack.mint_token(claims_like(alice_rs, **changes))
    assert_invalid_token(stack.call_nginx("alice", token, face=face))


# --- adversarial ------------------------------------------------------------------------------------

def test_client_sent_certificate_header_is_overwritten_by_nginx(stack, alice_rs, face):
    # bob connects with his own certificate but claims alice's in the header: nginx replaces the
    # header with the verified one (bob's), so alice's token does not match.
    assert_invalid_token(stack.call_nginx("bob", alice_rs, {CERT_HEADER: stack.cert_url_encoded("alice")}, face=face))
    # ... and the other way round the real certificate wins too.
    resp = stack.call_nginx("alice", alice_rs, {CERT_HEADER: stack.cert_url_encoded("bob")}, face=face)
    assert_allowed(resp, "alice-app")


def test_client_cannot_inject_identity_header(stack, alice_rs, face):
    # certbound sets x-consumer-sub from the token; a client-sent value must not reach the upstream.
    resp = stack.call_nginx("alice", alice_rs, {"x-consumer-sub": "admin"}, face=face)
    assert_allowed(resp, "alice-app")


def test_two_authorization_headers(stack, alice_rs, face):
    # RFC 6750 §2: one credential per request. nginx itself refuses a repeated Authorization line
    # (400 "client sent duplicate header line"), so certbound's own check is reached straight at
    # Envoy, which hands duplicates over comma-joined ("Bearer a,Bearer b").
    twice = [("authorization", f"Bearer {alice_rs}"), ("authorization", f"Bearer {alice_rs}")]
    assert_denied(stack.call_nginx("alice", None, twice, face=face))
    assert_invalid_request(stack.call_envoy_plain([*twice, (CERT_HEADER, stack.cert_url_encoded("alice"))], face=face))


@pytest.mark.parametrize("size", [30_000, 70_000])
def test_huge_certificate_header(stack, alice_rs, size, face):
    # 30 kB reaches certbound (under Envoy's 60 KiB header limit); 70 kB is stopped by Envoy (431).
    assert_denied(stack.call_envoy_plain({CERT_HEADER: "A" * size}, alice_rs, face=face))


def test_huge_token(stack, face):
    assert_denied(stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("alice")}, "a" * 30_000, face=face))


def test_huge_header_through_nginx(stack, alice_rs, face):
    # nginx's own limit (large_client_header_buffers 8k) answers first.
    assert_denied(stack.call_nginx("alice", alice_rs, {CERT_HEADER: "A" * 20_000}, face=face))


# --- both faces, side by side -------------------------------------------------------------------

# Set per connection or per hop, never by certbound: the only upstream headers allowed to differ.
# (The ext_authz "plain" listener traces: Envoy's tracer sends its span upstream as traceparent.)
PER_HOP = {"x-request-id", "x-envoy-expected-rq-timeout-ms", "x-forwarded-for", "x-forwarded-proto",
           "traceparent", "tracestate"}


def _answer(resp: Response) -> dict:
    """What a client and the upstream get: status, challenge, content type and body of a deny;
    the upstream's request headers (without per-hop ones) of an allow."""
    if resp.upstream is not None:
        return {"status": resp.status, "upstream": {k: v for k, v in resp.upstream_headers.items() if k not in PER_HOP}}
    return {"status": resp.status, "www-authenticate": resp.www_authenticate,
            "content-type": resp.header("content-type"), "body": resp.body}


@pytest.mark.parametrize("case", ["allowed", "extra-headers", "no-token", "garbage", "stolen", "unbound",
                                  "expired", "two-authorizations", "untrusted-hop", "strict-unknown"])
def test_both_faces_give_the_same_answer(stack, alice_rs, case):
    """The same request through ext_authz and through the module: the same status, challenge and
    body, and the same headers at the upstream (certbound's own set, the certificate header and
    everything else as the client sent it)."""
    cert = {CERT_HEADER: stack.cert_url_encoded("alice")}
    now = int(time.time())
    send = {
        "allowed": lambda face: stack.call_nginx("alice", alice_rs, face=face),
        "extra-headers": lambda face: stack.call_nginx("alice", alice_rs, {"x-consumer-sub": "admin", "x-app": "1"},
                                                       path="/a?b=c", face=face),
        "no-token": lambda face: stack.call_nginx("alice", None, face=face),
        "garbage": lambda face: stack.call_nginx("alice", "garbage", face=face),
        "stolen": lambda face: stack.call_nginx("bob", alice_rs, face=face),
        "unbound": lambda face: stack.call_nginx("alice", stack.get_token("unbound-app", AUDIENCE_RS), face=face),
        "expired": lambda face: stack.call_nginx("alice", stack.mint_token(
            claims_like(alice_rs, iat=now - 7200, exp=now - 3600)), face=face),
        "two-authorizations": lambda face: stack.call_envoy_plain(
            [("authorization", f"Bearer {alice_rs}"), ("authorization", f"Bearer {alice_rs}"), *cert.items()], face=face),
        "untrusted-hop": lambda face: stack.call_envoy_plain(cert, alice_rs, from_proxy=False, face=face),
        "strict-unknown": lambda face: stack.call_nginx("alice", alice_rs, path=STRICT, face=face),
    }[case]
    ext_authz, module = _answer(send("ext_authz")), _answer(send("module"))
    assert ext_authz == module
    if case.startswith(("allowed", "extra")):
        assert ext_authz["status"] == 200
    else:
        assert ext_authz["status"] in (400, 401) and ext_authz["www-authenticate"], ext_authz


# --- Kong's documented acceptance check, verbatim ------------------------------------------------------

def _kong_tutorial(stack, with_header: bool, face: str) -> int:
    """Kong 3.15 "OIDC with mTLS PoP via header" steps 5-6, as shell: token with curl over mTLS,
    then the call with x-client-cert = base64(DER) (Envoy "kong" listener, certbound base64_encoded)."""
    pki = stack.pki
    header = '-H "x-client-cert: $BASE64_CERT" ' if with_header else ""
    script = f"""
set -euo pipefail
TOKEN=$(curl -s --cacert '{pki}/server-ca.pem' --cert '{pki}/alice.pem' --key '{pki}/alice-key.pem' \\
  https://127.0.0.1:{stack.ports.idp}/token -d grant_type=client_credentials -d client_id=alice-app \\
  -d resource={AUDIENCE_RS} | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
BASE64_CERT=$(openssl x509 -in '{pki}/alice.pem' -outform DER | base64 | tr -d '\\n')
curl -s -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $TOKEN" {header}http://127.0.0.1:{stack.envoy_port("kong", face)}/
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    status = int(out.stdout.strip())
    # curl bypasses Stack's helpers: count certbound's decision for the Prometheus check by hand.
    counted = stack.expected_decisions["b64"] if face == "ext_authz" else stack.expected_module_decisions
    if status == 200:
        counted["allow"] += 1
    elif status == 401:
        counted["deny"] += 1
    return status


def test_kong_tutorial_with_header(stack, face):
    assert _kong_tutorial(stack, with_header=True, face=face) == 200


def test_kong_tutorial_without_header(stack, face):
    assert _kong_tutorial(stack, with_header=False, face=face) == 401


def test_kong_listener_refuses_wrong_certificate_and_format(stack, alice_rs, face):
    assert_allowed(stack.call_envoy_kong({CERT_HEADER: stack.cert_base64_der("alice")}, alice_rs, face=face), "alice-app")
    assert_invalid_token(stack.call_envoy_kong({CERT_HEADER: stack.cert_base64_der("bob")}, alice_rs, face=face))
    assert_invalid_token(stack.call_envoy_kong({CERT_HEADER: stack.cert_url_encoded("alice")}, alice_rs, face=face))


def test_check_request_above_certbounds_limit_is_a_deny_not_a_grpc_error(stack, alice_rs):
    # ext_authz only: the limit is on the gRPC CheckRequest certbound receives. The module reads
    # the request inside Envoy and never sees the body (module_kong's /body/ is a plain route).
    # On /body/ Envoy puts the request body (up to 4 MiB) into the CheckRequest, so a 2 MiB body
    # makes it larger than certbound's 1 MiB. A gRPC error would be status_on_error (503) here,
    # and an allow wherever failure_mode_allow is true: certbound must answer the deny itself.
    cert = {CERT_HEADER: stack.cert_base64_der("alice")}
    assert_allowed(stack.call_envoy_kong(cert, alice_rs, path="/body/", method="POST", body=b"a" * 1024), "alice-app")
    before = stack.certbound_metric("b64", "certbound_decisions_total", decision="deny", reason="request_too_large")
    resp = stack.call_envoy_kong(cert, alice_rs, path="/body/", method="POST", body=b"a" * (2 * 1024 * 1024))
    assert resp.status == 413, resp
    assert resp.upstream is None, resp
    assert json.loads(resp.body) == {"message": "Content Too Large"}, resp
    after = stack.certbound_metric("b64", "certbound_decisions_total", decision="deny", reason="request_too_large")
    assert after == before + 1


# --- revocation: a real `openssl ocsp` responder; eve is revoked in its index ----------------------

REVOKED = 'error_description="client certificate revoked"'
UNKNOWN = 'error_description="client certificate revocation status unknown"'
STRICT = "/strict/"  # Envoy's route naming certbound's policy "strict" (revocation_check_mode STRICT)


def _ocsp_checks(stack, face: str, result: str) -> Optional[float]:
    """certbound_revocation_checks_total{method="ocsp"} of the "header" instance. None on the
    module face: the module exports its decisions only (docs/envoy-module.md, "Metrics and
    access logs"), which is asserted here so the difference stays a documented one."""
    if face == "module":
        assert not re.search(r"^envoy_certbound_revocation", stack.envoy_prometheus(), re.M)
        return None
    return stack.certbound_metric("header", "certbound_revocation_checks_total", method="ocsp", result=result)


@pytest.fixture(scope="session")
def dave_token(stack) -> str:
    # The IdP binds a token to whichever certificate the client shows over mTLS.
    token = stack.get_token("bob-app", AUDIENCE_RS, cert="dave")
    assert jwt_parts(token)[1]["cnf"]["x5t#S256"] == stack.thumbprint("dave")
    return token


@pytest.fixture(scope="session")
def eve_token(stack) -> str:
    token = stack.get_token("bob-app", AUDIENCE_RS, cert="eve")
    assert jwt_parts(token)[1]["cnf"]["x5t#S256"] == stack.thumbprint("eve")
    return token


def test_certificates_name_the_ocsp_responder(stack):
    for name in ("dave", "eve"):
        out = subprocess.run(["openssl", "x509", "-in", str(stack.pki / f"{name}.pem"), "-noout", "-ocsp_uri"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == stack.ocsp_url
    assert stack.ocsp_running()


def test_ocsp_good_certificate_allowed_through_nginx(stack, dave_token, face):
    # On the module face this first OCSP lookup cannot finish inside the request-headers hook:
    # the request is held and resumed through Envoy's scheduler once the responder answered.
    before = _ocsp_checks(stack, face, "good")
    allowed = stack.decisions(face, "header", "allow", "bound")
    assert_allowed(stack.call_nginx("dave", dave_token, face=face), "bob-app")
    assert stack.decisions_reach(face, "header", "allow", "bound", allowed + 1) == allowed + 1
    if face == "ext_authz":
        assert _ocsp_checks(stack, face, "good") == before + 1


def test_ocsp_revoked_certificate_denied_cert_revoked_through_nginx(stack, eve_token, face):
    before = stack.decisions(face, "header", "deny", "cert_revoked")
    resp = stack.call_nginx("eve", eve_token, face=face)
    assert_invalid_token(resp)
    assert REVOKED in resp.www_authenticate, resp
    assert stack.decisions_reach(face, "header", "deny", "cert_revoked", before + 1) == before + 1
    # Cached: the same answer again, without asking the responder again (counted on the
    # ext_authz face; the module exports no revocation series).
    revoked_checks = _ocsp_checks(stack, face, "revoked")
    assert face == "module" or revoked_checks >= 1
    assert REVOKED in stack.call_nginx("eve", eve_token, face=face).www_authenticate
    assert _ocsp_checks(stack, face, "revoked") == revoked_checks


def test_revoked_certificate_denied_on_the_kong_listener_too(stack, eve_token, dave_token, face):
    assert_allowed(stack.call_envoy_kong({CERT_HEADER: stack.cert_base64_der("dave")}, dave_token, face=face), "bob-app")
    resp = stack.call_envoy_kong({CERT_HEADER: stack.cert_base64_der("eve")}, eve_token, face=face)
    assert_invalid_token(resp)
    assert REVOKED in resp.www_authenticate, resp


def test_ignore_ca_error_allows_a_certificate_without_responder(stack, alice_rs, face):
    # alice's certificate names no OCSP responder and no CRL: Kong's default lets it through.
    assert_allowed(stack.call_nginx("alice", alice_rs, face=face), "alice-app")


def test_strict_policy_route_while_the_responder_answers(stack, dave_token, eve_token, alice_rs, face):
    resp = stack.call_nginx("dave", dave_token, path=STRICT, face=face)
    assert_allowed(resp, "bob-app")
    assert resp.upstream["path"] == STRICT
    resp = stack.call_nginx("eve", eve_token, path=STRICT, face=face)
    assert_invalid_token(resp)
    assert REVOKED in resp.www_authenticate, resp
    # alice's certificate names no responder and no CRL: STRICT cannot determine its status.
    resp = stack.call_nginx("alice", alice_rs, path=STRICT, face=face)
    assert_invalid_token(resp)
    assert UNKNOWN in resp.www_authenticate, resp


def test_responder_unreachable_strict_denies_and_ignore_ca_error_allows(stack, dave_token, face):
    stack.stop_ocsp()
    assert not stack.ocsp_running()
    # dave's "good" is cached for the strict policy's cert_cache_ttl = 1 s; after that STRICT
    # must refuse him (bounded polling, not a fixed sleep).
    deadline = time.monotonic() + 15
    while True:
        resp = stack.call_nginx("dave", dave_token, path=STRICT, face=face)
        if resp.status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert_invalid_token(resp)
    assert UNKNOWN in resp.www_authenticate, resp
    assert stack.decisions(face, "header", "deny", "cert_revocation_unknown") >= 1
    errors = _ocsp_checks(stack, face, "error")
    assert face == "module" or errors >= 1
    # The same certificate on the default policy (IGNORE_CA_ERROR): an unreachable responder is
    # the CA's error, not a reason to deny.
    assert_allowed(stack.call_nginx("dave", dave_token, face=face), "bob-app")


def test_routes_in_the_config_pick_the_strict_policy_without_context_extensions(stack, alice_rs, face):
    # alice's certificate names no responder: only the strict policy refuses it. Envoy's route
    # for /by-rule/ is the catch-all one, which names no policy.
    resp = stack.call_nginx("alice", alice_rs, path="/by-rule/strict", face=face)
    assert_invalid_token(resp)
    assert UNKNOWN in resp.www_authenticate, resp
    # The rule's regex is anchored, and it takes GET only: both of these get the default policy.
    assert_allowed(stack.call_nginx("alice", alice_rs, path="/by-rule/strict/x", face=face), "alice-app")
    assert_allowed(stack.call_nginx("alice", alice_rs, path="/by-rule/strict", method="POST", face=face),
                   "alice-app")


# --- key rotation, health, metrics (after the matrix) ------------------------------------------------

def test_known_keys_keep_working_while_the_idp_is_paused(stack, alice_rs, alice_es, face):
    # SIGSTOP freezes the real IdP: its sockets stay open, so anything certbound asks it hangs.
    # Tokens whose kid certbound already holds must not notice; an unknown kid is denied by
    # certbound itself: a 401 with certbound's challenge, not Envoy's fail-closed 503, which is
    # what a check outliving Envoy's 2 s ext_authz timeout would get.
    header, payload, sig = alice_rs.split(".")
    head = json.loads(b64u_decode(header))
    head["kid"] = "never-published"
    unknown_kid = f"{b64u(json.dumps(head).encode())}.{payload}.{sig}"
    stack.pause("idp")
    try:
        for token in (alice_rs, alice_es):
            assert_allowed(stack.call_nginx("alice", token, face=face), "alice-app")
        assert_allowed(stack.call_envoy_mtls("alice", alice_rs, face=face), "alice-app")
        resp = stack.call_nginx("alice", unknown_kid, face=face)
        assert_invalid_token(resp)
        assert "unknown signing key" in resp.www_authenticate, resp
        for mode in CERTBOUND_MODES:
            assert stack.certbound_admin(mode, "/readyz")[0] == 200, mode
    finally:
        stack.resume("idp")
    wait_until("the IdP answers again", lambda: stack._discovery(stack.ports.idp), 10)


def test_idp_key_rotation_picked_up_without_restart(stack, alice_rs, face):
    pids = {name: pid for name, pid in stack.pids().items() if name.startswith("certbound")}
    kids = stack.rotate_idp_keys()
    for resource, alg in ((AUDIENCE_RS, "RS256"), (AUDIENCE_ES, "ES256")):
        token = stack.get_token("alice-app", resource)
        assert jwt_parts(token)[0]["kid"] == kids[alg]  # a kid certbound has never seen
        # certbound re-fetches the JWKS on an unknown kid, at most once per rediscovery_lifetime
        # (1 s here): a bounded retry covers a refusal inside that window.
        deadline = time.monotonic() + 10
        while True:
            resp = stack.call_nginx("alice", token, face=face)
            if resp.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert_allowed(resp, "alice-app")
    # Tokens signed before the rotation still verify (old keys remain published).
    assert_allowed(stack.call_nginx("alice", alice_rs, face=face), "alice-app")
    assert {n: p for n, p in stack.pids().items() if n.startswith("certbound")} == pids
    assert all(name in stack.alive() for name in pids), "a certbound process died"


# --- opaque tokens (RFC 7662 introspection against the real IdP) ------------------------------

AUDIENCE_OPAQUE = "https://opaque.test"


def test_opaque_bound_token_is_introspected_and_allowed_for_its_certificate(stack, face):
    token = stack.get_token("alice-app", AUDIENCE_OPAQUE)
    assert token.count(".") != 2, "the IdP issued an opaque token"
    assert_allowed(stack.call_nginx("alice", token, face=face), "alice-app")
    # Again: served from certbound's cache (the IdP would answer the same).
    assert_allowed(stack.call_nginx("alice", token, face=face), "alice-app")


def test_opaque_token_stolen_and_replayed_with_another_certificate(stack, face):
    token = stack.get_token("alice-app", AUDIENCE_OPAQUE)
    resp = stack.call_nginx("bob", token, face=face)
    assert_invalid_token(resp)
    assert "does not match" in resp.www_authenticate


def test_opaque_token_the_idp_never_issued(stack, face):
    resp = stack.call_nginx("alice", "QpT3n0tAR3alT0k3nFr0mTh3IdPxxxxxxxxxxxxxxx", face=face)
    assert_invalid_token(resp)
    assert "not active" in resp.www_authenticate


def test_unbound_opaque_token_refused_in_strict_mode(stack, face):
    token = stack.get_token("unbound-app", AUDIENCE_OPAQUE, cert=None)
    resp = stack.call_nginx("alice", token, face=face)
    assert_invalid_token(resp)
    assert "not certificate-bound" in resp.www_authenticate


def test_envoy_access_log_shows_certbounds_verdict_from_dynamic_metadata(stack, alice_rs, face):
    marker = f"/access-log-{time.time_ns()}"
    assert_allowed(stack.call_nginx("alice", alice_rs, path=marker, face=face), "alice-app")
    assert_invalid_token(stack.call_nginx("bob", alice_rs, path=marker + "-stolen", face=face))
    log = stack.logs / "envoy.log"
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in log.read_text(errors="replace").splitlines() if marker in l]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    allowed = next(l for l in lines if f"{marker} " in l)
    stolen = next(l for l in lines if f"{marker}-stolen " in l)
    assert "policy=default decision=allow reason=bound sub=alice-app x5t=" + stack.thumbprint("alice") in allowed
    assert "decision=deny reason=binding_mismatch" in stolen
    assert alice_rs not in log.read_text(errors="replace"), "the token reached Envoy's log"


# --- header trust (secure_source + trusted_ips) -----------------------------------------------

def test_stolen_token_with_public_certificate_sent_around_the_proxy_is_refused(stack, alice_rs, face):
    """Certificates are public: an attacker holding alice's token and her certificate who reaches
    Envoy without going through nginx gets nothing, because the header only counts from nginx's
    address (127.0.0.2)."""
    before = stack.decisions(face, "header", "deny", "cert_missing")
    resp = stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("alice")}, alice_rs, from_proxy=False, face=face)
    assert_invalid_token(resp)
    assert "client certificate required" in resp.www_authenticate
    assert stack.decisions_reach(face, "header", "deny", "cert_missing", before + 1) == before + 1


def test_spoofed_forwarded_for_does_not_make_a_hop_trusted(stack, alice_rs, face):
    headers = {CERT_HEADER: stack.cert_url_encoded("alice"), "x-forwarded-for": "127.0.0.2", "x-real-ip": "127.0.0.2"}
    assert_invalid_token(stack.call_envoy_plain(headers, alice_rs, from_proxy=False, face=face))


def test_the_same_request_from_the_trusted_proxy_address_is_allowed(stack, alice_rs, face):
    assert_allowed(stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("alice")}, alice_rs, face=face), "alice-app")



# --- an Istio-style ingress gateway: Envoy terminates mTLS and writes XFCC (deploy/istio/gateway-mtls)

def _xfcc_naming(stack, cert: str) -> str:
    der = ssl.PEM_cert_to_DER_cert(stack.cert_pem(cert))
    return f'Hash={hashlib.sha256(der).hexdigest()};Cert="{stack.cert_url_encoded(cert)}";Subject="CN={cert}"'


def test_gateway_xfcc_binds_the_token_to_the_handshake_certificate(stack, alice_rs, alice_es, face):
    resp = stack.call_envoy_gateway("alice", alice_rs, face=face)
    assert_allowed(resp, "alice-app")
    # The element certbound read is the one Envoy wrote from the handshake (it goes upstream too).
    der = ssl.PEM_cert_to_DER_cert(stack.cert_pem("alice"))
    xfcc = resp.upstream_headers.get("x-forwarded-client-cert", "")
    assert f"Hash={hashlib.sha256(der).hexdigest()}" in xfcc and "Cert=" in xfcc, xfcc
    assert_allowed(stack.call_envoy_gateway("alice", alice_es, face=face), "alice-app")


def test_gateway_alice_token_with_bob_certificate(stack, alice_rs, face):
    assert_invalid_token(stack.call_envoy_gateway("bob", alice_rs, face=face))


def test_gateway_replaces_a_client_sent_xfcc(stack, alice_rs, face):
    """bob holds alice's stolen token and her (public) certificate and sends an XFCC naming it:
    the gateway (SANITIZE_SET) replaces it with bob's own, so the binding fails."""
    forged = {"x-forwarded-client-cert": _xfcc_naming(stack, "alice")}
    resp = stack.call_envoy_gateway("bob", alice_rs, forged, face=face)
    assert_invalid_token(resp)


# --- XFCC element confusion: Envoy writes URI and DNS SANs unquoted ----------------------------------
# mallory holds alice's stolen token and alice's (public) certificate, and gets a certificate from
# a CA the gateway trusts whose URI or DNS SAN holds XFCC structure naming alice's certificate.
# With `uri: true, dns: true` Envoy copies that text verbatim into the XFCC it writes.

def _issue_client(stack, name: str, uris: list[str], dnss: list[str], cn: Optional[str] = None,
                  ocsp_url: Optional[str] = None) -> None:
    """An EC leaf from the suite's intermediate (which Envoy trusts) with exactly these SANs:
    NAME.pem, NAME-key.pem, NAME-chain.pem in the stack's PKI directory (as pki.sh writes them).
    `ocsp_url`: the OCSP responder its Authority Information Access names."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

    pki = stack.pki
    ca_cert = x509.load_pem_x509_certificate((pki / "client-int-ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "client-int-ca-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dnss]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certbound e2e"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, cn or name)]))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False))
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (pki / f"{name}.pem").write_bytes(pem)
    (pki / f"{name}-chain.pem").write_bytes(pem + (pki / "client-int-ca.pem").read_bytes())
    key_path = pki / f"{name}-key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)


def _forged_sans(stack) -> dict[str, tuple[list[str], list[str]]]:
    """Attacker SANs (URI list, DNS list) by name, each naming alice's certificate."""
    der = ssl.PEM_cert_to_DER_cert(stack.cert_pem("alice"))
    alice_hash = hashlib.sha256(der).hexdigest()
    alice_pem = stack.cert_url_encoded("alice")
    return {
        # A second element: Chain= (read where CAs are configured) or Hash= (where none are).
        "uri-chain-element": ([f"urn:x,Chain={alice_pem}"], ["m.clients.test"]),
        "uri-quoted-chain-element": ([f'urn:x,Chain="{alice_pem}"'], ["m.clients.test"]),
        "uri-hash-element": ([f"urn:x,Hash={alice_hash}"], ["m.clients.test"]),
        "dns-hash-element": (["urn:x"], [f"m.clients.test,Hash={alice_hash}"]),
        # A second pair in Envoy's own element.
        "uri-hash-pair": ([f"urn:x;Hash={alice_hash}"], ["m.clients.test"]),
        "uri-cert-pair": ([f'urn:x;Cert="{alice_pem}"'], ["m.clients.test"]),
        # A quote that would swallow structure written after it.
        "dns-quote-swallow": (["urn:x"], [f'm.clients.test;Z=a",Hash={alice_hash}']),
    }


_FORGED_SHAPES = ("uri-chain-element", "uri-quoted-chain-element", "uri-hash-element", "dns-hash-element",
                  "uri-hash-pair", "uri-cert-pair", "dns-quote-swallow")


@pytest.fixture(scope="session")
def mallory(stack) -> dict[str, str]:
    """Certificate name -> the SAN text it smuggles into XFCC (one certificate per attack)."""
    out = {}
    forged = _forged_sans(stack)
    assert tuple(forged) == _FORGED_SHAPES
    for shape, (uris, dnss) in forged.items():
        name = f"mallory-{shape}"
        _issue_client(stack, name, uris, dnss)
        out[name] = (uris + dnss)[-1] if shape.startswith("dns") else uris[0]
    return out


@pytest.mark.parametrize("path", ["/", "/ca/"])
@pytest.mark.parametrize("shape", _FORGED_SHAPES)
def test_gateway_xfcc_forged_by_a_san_never_passes_as_the_victim(stack, alice_rs, mallory, shape, path, face):
    name = f"mallory-{shape}"
    # Envoy really wrote the forged text into the header it sends upstream (/healthz skips ext_authz).
    echo = stack._send(http.client.HTTPSConnection("127.0.0.1", stack.envoy_port("gateway", face), timeout=10,
                                                   context=stack.tls_context(name)),
                       "GET", "/healthz", [("host", "localhost")])
    xfcc = echo.upstream_headers.get("x-forwarded-client-cert", "")
    assert mallory[name] in xfcc, xfcc
    # "/" checks the binding on Hash/Cert alone; "/ca/" verifies the chain against the client CAs.
    resp = stack.call_envoy_gateway(name, alice_rs, path=path, face=face)
    assert_invalid_token(resp)
    assert resp.upstream is None, resp


@pytest.mark.parametrize("path", ["/", "/ca/"])
def test_gateway_xfcc_honest_client_with_several_uri_and_dns_sans_is_allowed(stack, alice_rs, path, face):
    # Envoy quotes Subject and escapes its `"` and `\\` (RFC 2253): a CN holding them stays one value.
    _issue_client(stack, "multi-san", ["spiffe://e2e.test/ns/a/sa/client", "urn:e2e:client=1"],
                  ["multi.clients.test", "multi2.clients.test"], cn='multi "san", a;b\\c')
    token = stack.get_token("bob-app", AUDIENCE_RS, cert="multi-san")
    assert_allowed(stack.call_envoy_gateway("multi-san", token, path=path, face=face), "bob-app")
    assert_allowed(stack.call_envoy_gateway("alice", alice_rs, path=path, face=face), "alice-app")


# --- per-route settings of the shipped Envoy configs (deploy/envoy/generate.py) ------------------

def _decisions_total(stack, face: str) -> dict[str, float]:
    """Every decision counted so far: per instance ("header", "peer") on the ext_authz face;
    on the module face Envoy's one envoy_certbound_decisions family for all module listeners."""
    if face == "module":
        return {"module": sum(stack.module_decisions().values())}
    totals = {}
    for mode in ("header", "peer"):
        _, text = stack.certbound_admin(mode, "/metrics")
        totals[mode] = sum(float(line.split()[-1]) for line in text.decode().splitlines()
                           if line.startswith("certbound_decisions_total{"))
    return totals


def test_health_route_skips_ext_authz_and_nothing_else_does(stack, face):
    """/healthz has the check disabled per route (ExtAuthzPerRoute as in deploy/envoy/*.yaml; for
    the module Envoy's FilterConfig {disabled: true}): no token, no certificate header, and
    certbound is not asked. A path that only starts like it is still checked."""
    before = _decisions_total(stack, face)
    # Sent without Stack's bookkeeping: certbound decides nothing here, so nothing is recorded.
    plain = stack._send(http.client.HTTPConnection("127.0.0.1", stack.envoy_port("plain", face), timeout=10),
                        "GET", "/healthz?probe=1", [("host", "127.0.0.1")])
    assert plain.status == 200 and plain.upstream is not None, plain
    mtls = stack._send(http.client.HTTPSConnection("127.0.0.1", stack.envoy_port("mtls", face), timeout=10,
                                                   context=stack.tls_context("alice")),
                       "GET", "/healthz", [("host", "localhost")])
    assert mtls.status == 200 and mtls.upstream is not None, mtls
    resp = stack.call_envoy_plain(path="/healthzz", face=face)
    assert resp.status == 401 and resp.upstream is None, resp
    want = {k: v + 1 if k in ("header", "module") else v for k, v in before.items()}
    deadline = time.monotonic() + 5
    while (after := _decisions_total(stack, face)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after == want


def test_health_after_matrix(stack):
    for mode in CERTBOUND_MODES:
        assert stack.certbound_admin(mode, "/healthz")[0] == 200, mode
        assert stack.certbound_admin(mode, "/readyz")[0] == 200, mode
    # gRPC health (grpc.health.v1) as probed by Envoy's active health checker every second.
    deadline = time.monotonic() + 10
    health = {}
    while time.monotonic() < deadline:
        health = {mode: stack.grpc_health(mode) for mode in CERTBOUND_MODES}
        if all(v == "healthy" for v in health.values()):
            break
        time.sleep(0.5)
    assert all(v == "healthy" for v in health.values()), health


def _by_policy(stack, face: str) -> dict[tuple[str, str, str], float]:
    """{(policy, decision, reason): count} as the suite's Prometheus last scraped the "header"
    instance (ext_authz face), or as Envoy's module counter holds it now (module face)."""
    if face == "module":
        return stack.module_decisions_by_policy()
    result = stack.prom_query('sum by (policy, decision, reason) (certbound_decisions_total{mode="header"})')
    return {(r["metric"].get("policy", "?"), r["metric"]["decision"], r["metric"]["reason"]): float(r["value"][1])
            for r in result}


def test_decisions_are_counted_under_the_policy_that_decided_them(stack, alice_rs, face):
    """The `policy` label, read where operators read it (the suite's Prometheus; Envoy's stats
    for the module): /strict/ (the Envoy route names "strict"), /by-rule/strict (certbound's own
    [[routes]] pick "strict") and / (the default policy). alice's certificate names no OCSP
    responder, so only "strict" refuses her. Labels never take a value the configuration does
    not hold."""
    unknown = "cert_revocation_unknown"
    strict, default = ("strict", "deny", unknown), ("default", "allow", "bound")
    if face == "ext_authz":
        stack.wait_prom_targets_up()
        now = {key: stack.certbound_metric("header", "certbound_decisions_total", policy=key[0],
                                           decision=key[1], reason=key[2]) for key in (strict, default)}
        # Prometheus lags the instance: wait until it has caught up, so the deltas are ours.
        wait_until("prometheus has the header instance's counts", lambda: all(
            _by_policy(stack, face).get(k, 0.0) == v for k, v in now.items()), 20, interval=0.5)
    before = _by_policy(stack, face)

    for path in (STRICT, "/by-rule/strict"):
        resp = stack.call_nginx("alice", alice_rs, path=path, face=face)
        assert_invalid_token(resp)
        assert UNKNOWN in resp.www_authenticate, resp
    assert_allowed(stack.call_nginx("alice", alice_rs, face=face), "alice-app")

    want = {strict: before.get(strict, 0.0) + 2, default: before.get(default, 0.0) + 1}
    deadline = time.monotonic() + 20
    while True:
        after = _by_policy(stack, face)
        if all(after.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {k: after.get(k) for k in want} == want
    not_default = ("default", "deny", unknown)
    assert after.get(not_default, 0.0) == before.get(not_default, 0.0), "the default policy did not decide these"
    # The "header" instance's configuration holds the default policy and "strict"; "(none)"
    # counts checks no configured policy decided.
    assert {policy for policy, _, _ in after} <= {"default", "strict", "(none)"} | (
        {"dpop", "dpop-nonce", "discover", "gateway-ca"} if face == "module" else set()), after


def test_prometheus_sees_the_build_and_the_process_of_each_instance(stack):
    """certbound_build_info carries the version and the commit the binary reports
    (`certbound --version`, from build.rs); process_* come from the running process."""
    out = subprocess.run([str(stack.certbound_bin), "--version"], capture_output=True, text=True, check=True)
    m = re.fullmatch(r"certbound (\S+) \((\S+)\)\n?", out.stdout)
    assert m, out.stdout
    version, commit = m.groups()
    stack.wait_prom_targets_up()
    build = wait_until("prometheus: certbound_build_info of every instance",
                       lambda: (lambda r: r if len(r) == len(CERTBOUND_MODES) else None)(
                           stack.prom_query("certbound_build_info")), 20, interval=0.5)
    assert {(r["metric"]["mode"], r["metric"]["version"], r["metric"]["commit"], r["value"][1]) for r in build} == {
        (mode, version, commit, "1") for mode in CERTBOUND_MODES}
    in_checkout = subprocess.run(["git", "-C", str(stack.certbound_bin.parent), "rev-parse", "--git-dir"],
                                 capture_output=True).returncode == 0
    if in_checkout and not os.environ.get("BUILD_GIT_COMMIT"):
        # Built from this checkout: the label names one of its commits.
        assert subprocess.run(["git", "-C", str(stack.certbound_bin.parent), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True).returncode == 0, commit
    rss = stack.prom_query("process_resident_memory_bytes")
    assert {r["metric"]["mode"] for r in rss} == set(CERTBOUND_MODES)
    assert all(float(r["value"][1]) > 0 for r in rss), rss


def test_prometheus_counts_match_the_suite(stack):
    up = stack.wait_prom_targets_up()
    assert up == {mode: 1.0 for mode in CERTBOUND_MODES}
    # Scrapes every second: wait (bounded) until Prometheus has seen the last decisions.
    deadline = time.monotonic() + 20
    got, want = {}, {}
    while time.monotonic() < deadline:
        want = {mode: {d: float(n) for d, n in stack.expected_decisions[mode].items() if n} for mode in CERTBOUND_MODES}
        got = {mode: {d: n for d, n in stack.prom_decisions(mode).items() if n} for mode in CERTBOUND_MODES}
        if got == want:
            break
        time.sleep(1)
    assert got == want
    assert want["header"].get("allow") and want["header"].get("deny")  # the suite did exercise both


def test_envoys_module_decision_counters_match_the_suite(stack):
    """The module face's counterpart of the Prometheus cross-check: Envoy's
    envoy_certbound_decisions (all module listeners; 1.40 adds no _total) counted exactly the
    decisions the suite saw on the module face since the stack warmed the module up."""
    def by_decision() -> dict[str, float]:
        out: dict[str, float] = {}
        for (decision, reason), n in stack.module_decisions().items():
            delta = n - stack.module_decisions_at_start.get((decision, reason), 0.0)
            if delta:
                out[decision] = out.get(decision, 0.0) + delta
        return out

    want = {d: float(n) for d, n in stack.expected_module_decisions.items() if n}
    deadline = time.monotonic() + 5
    while (got := by_decision()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == want
    assert want.get("allow") and want.get("deny")  # the suite did exercise both
    assert "envoy_certbound_decisions_total" not in stack.envoy_prometheus()
