"""DPoP (RFC 9449) end to end: tokens from the real IdP bound to a client key (cnf.jkt), proofs
made by a test client, through real Envoy to two certbound replicas that share one real Redis
replay store (stack.py: listeners "dpop" and "dpop2").

Both replicas run `proof_of_possession_dpop = "strict"` with `dpop_htu_base_url` set to the
address clients use (DPOP_BASE_URL): Envoy itself sees plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import re
import time

import pytest

from stack import DPOP_BASE_URL, DROP, DpopKey, Response, jwt_parts


@pytest.fixture(scope="module")
def client(stack):
    key = DpopKey()
    token = stack.get_dpop_token(key)
    return key, token


def url(path: str) -> str:
    return DPOP_BASE_URL + path


def assert_dpop_denied(resp: Response, error: str) -> None:
    assert resp.status == 401, resp
    assert resp.upstream is None, resp
    www = resp.header("www-authenticate") or ""
    assert www.startswith("DPoP "), resp
    assert 'algs="ES256 RS256"' in www, www
    assert f'error="{error}"' in www, www
    assert resp.json() == {"message": "Unauthorized"}, resp


def test_idp_binds_the_token_to_the_client_key(client):
    key, token = client
    _, claims = jwt_parts(token)
    assert claims["cnf"] == {"jkt": key.thumbprint}


def test_valid_proof_is_allowed_and_upstream_sees_a_bearer_request(stack, client, face):
    key, token = client
    resp = stack.call_envoy_dpop(token, key.proof("GET", url("/orders"), token), path="/orders?page=2", face=face)
    assert resp.status == 200, resp
    upstream = resp.upstream_headers
    assert upstream.get("authorization") == f"Bearer {token}", "scheme rewritten to Bearer"
    assert "dpop" not in upstream, "the proof never reaches the upstream"
    assert upstream.get("x-consumer-sub") == "dpop-app"


def test_replayed_proof_is_refused_by_the_same_replica(stack, client, face):
    key, token = client
    proof = key.proof("GET", url("/"), token)
    assert stack.call_envoy_dpop(token, proof, face=face).status == 200
    assert_dpop_denied(stack.call_envoy_dpop(token, proof, face=face), "invalid_dpop_proof")


def test_replayed_proof_is_refused_by_another_replica_sharing_redis(stack, client, face):
    key, token = client
    proof = key.proof("GET", url("/"), token)
    assert stack.call_envoy_dpop(token, proof, replica=1, face=face).status == 200
    assert_dpop_denied(stack.call_envoy_dpop(token, proof, replica=2, face=face), "invalid_dpop_proof")


@pytest.mark.parametrize("first", ["ext_authz", "module"])
def test_a_proof_accepted_by_one_face_is_a_replay_on_the_other(stack, client, first):
    """Both faces' replicas record proofs in the same Redis: a proof the ext_authz face accepted
    is refused by the module face, and the other way round."""
    key, token = client
    other = "module" if first == "ext_authz" else "ext_authz"
    proof = key.proof("GET", url("/"), token)
    assert stack.call_envoy_dpop(token, proof, face=first).status == 200
    assert_dpop_denied(stack.call_envoy_dpop(token, proof, replica=2, face=other), "invalid_dpop_proof")


@pytest.mark.parametrize("case", ["htm", "htu", "ath", "stale_iat", "other_key", "forged_key"])
def test_proofs_not_matching_the_request_or_token_are_refused(stack, client, case, face):
    key, token = client
    other = DpopKey()
    proof = {
        "htm": lambda: key.proof("POST", url("/"), token),
        "htu": lambda: key.proof("GET", url("/elsewhere"), token),
        "ath": lambda: key.proof("GET", url("/"), "another-token"),
        "stale_iat": lambda: key.proof("GET", url("/"), token, iat=int(time.time()) - 600),
        # A proof by another key: valid in itself, but not the key the token is bound to.
        "other_key": lambda: other.proof("GET", url("/"), token),
        # The bound key's public JWK in the header, signed by another key.
        "forged_key": lambda: other.proof("GET", url("/"), token, jwk=key.jwk),
    }[case]()
    error = "invalid_token" if case == "other_key" else "invalid_dpop_proof"
    assert_dpop_denied(stack.call_envoy_dpop(token, proof, face=face), error)


def test_dpop_bound_token_sent_as_bearer_is_refused(stack, client, face):
    key, token = client
    resp = stack.call_envoy_dpop(token, key.proof("GET", url("/"), token), scheme="Bearer", face=face)
    assert_dpop_denied(resp, "invalid_token")


def test_nonce_round_trip_across_replicas(stack, client, face):
    key, token = client
    first = stack.call_envoy_dpop(token, key.proof("GET", url("/nonce/x"), token), path="/nonce/x", face=face)
    assert_dpop_denied(first, "use_dpop_nonce")
    nonce = first.header("dpop-nonce")
    assert nonce and re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce), first
    # The other replica shares the nonce secret: the nonce one issued, the other accepts.
    retry = stack.call_envoy_dpop(token, key.proof("GET", url("/nonce/x"), token, nonce=nonce),
                                  path="/nonce/x", replica=2, face=face)
    assert retry.status == 200, retry


def flip_last_char(segment: str) -> str:
    return segment[:-1] + ("A" if segment[-1] != "A" else "B")


def hs256_signature(proof_without_signature: str) -> str:
    import base64
    import hashlib
    import hmac
    mac = hmac.new(b"a-shared-secret", proof_without_signature.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def negative_proof(key: DpopKey, token: str, case: str) -> str:
    """The malformed proofs of the OpenID Foundation's FAPI 2.0 DPoP negative tests (and a few
    neighbours), each otherwise valid for GET /negative with `token`."""
    htu = url("/negative")
    build = lambda **kw: key.proof("GET", htu, token, **kw)  # noqa: E731
    if case == "bad_signature":
        head, claims, sig = build().split(".")
        return f"{head}.{claims}.{flip_last_char(sig)}"
    if case == "hs256":
        unsigned = build(header_patch={"alg": "HS256"}, signature="").rstrip(".")
        return f"{unsigned}.{hs256_signature(unsigned)}"
    return {
        "typ_missing": lambda: build(header_patch={"typ": DROP}),
        "typ_jwt": lambda: build(header_patch={"typ": "JWT"}),
        "alg_missing": lambda: build(header_patch={"alg": DROP}),
        "alg_none": lambda: build(header_patch={"alg": "none"}, signature=""),
        "alg_not_matching_key": lambda: build(header_patch={"alg": "RS256"}),
        "jwk_missing": lambda: build(header_patch={"jwk": DROP}),
        "jwk_private": lambda: build(header_patch={"jwk": key.private_jwk()}),
        "jti_missing": lambda: build(claims_patch={"jti": DROP}),
        "htm_missing": lambda: build(claims_patch={"htm": DROP}),
        "htm_wrong": lambda: key.proof("POST", htu, token),
        "htm_lowercase": lambda: key.proof("get", htu, token),
        "htu_missing": lambda: build(claims_patch={"htu": DROP}),
        "htu_with_query": lambda: key.proof("GET", htu + "?page=2", token),
        "htu_with_fragment": lambda: key.proof("GET", htu + "#top", token),
        "htu_other_host": lambda: key.proof("GET", "https://attacker.test/negative", token),
        "iat_missing": lambda: build(claims_patch={"iat": DROP}),
        "iat_future": lambda: build(iat=int(time.time()) + 600),
        "iat_string": lambda: build(claims_patch={"iat": str(int(time.time()))}),
        "ath_missing": lambda: key.proof("GET", htu, None),
        "ath_other_token": lambda: key.proof("GET", htu, token + "x"),
    }[case]()


# case -> certbound's deny reason (the metric label); the client always sees 401 with
# `DPoP error="invalid_dpop_proof"`.
NEGATIVE_PROOFS = {
    "typ_missing": "dpop_proof_invalid",
    "typ_jwt": "dpop_proof_invalid",
    "alg_missing": "dpop_algorithm_not_allowed",
    "alg_none": "dpop_proof_invalid",  # unsigned: no signature segment at all
    "hs256": "dpop_algorithm_not_allowed",
    "alg_not_matching_key": "dpop_proof_invalid",
    "jwk_missing": "dpop_proof_invalid",
    "jwk_private": "dpop_proof_invalid",
    "bad_signature": "dpop_signature_invalid",
    "jti_missing": "dpop_proof_invalid",
    "htm_missing": "dpop_proof_invalid",
    "htm_wrong": "dpop_htm_mismatch",
    "htm_lowercase": "dpop_htm_mismatch",
    "htu_missing": "dpop_proof_invalid",
    "htu_with_query": "dpop_proof_invalid",
    "htu_with_fragment": "dpop_proof_invalid",
    "htu_other_host": "dpop_htu_mismatch",
    "iat_missing": "dpop_proof_invalid",
    "iat_future": "dpop_iat_invalid",
    "iat_string": "dpop_proof_invalid",
    "ath_missing": "dpop_ath_mismatch",
    "ath_other_token": "dpop_ath_mismatch",
}


def deny_count(stack, face: str, reason: str) -> float:
    return stack.decisions(face, "dpop", "deny", reason)


@pytest.mark.parametrize("case", sorted(NEGATIVE_PROOFS))
def test_malformed_proof_from_the_fapi_negative_list_is_refused(stack, client, case, face):
    key, token = client
    reason = NEGATIVE_PROOFS[case]
    before = deny_count(stack, face, reason)
    resp = stack.call_envoy_dpop(token, negative_proof(key, token, case), path="/negative", face=face)
    assert_dpop_denied(resp, "invalid_dpop_proof")
    assert stack.decisions_reach(face, "dpop", "deny", reason, before + 1) == before + 1, \
        f"{case}: expected deny reason {reason}"


def test_request_without_a_proof_is_refused(stack, client, face):
    key, token = client
    before = deny_count(stack, face, "dpop_proof_missing")
    assert_dpop_denied(stack.call_envoy_dpop(token, None, face=face), "invalid_dpop_proof")
    assert stack.decisions_reach(face, "dpop", "deny", "dpop_proof_missing", before + 1) == before + 1


def test_two_proofs_in_one_request_are_refused(stack, client, face):
    key, token = client
    first, second = (key.proof("GET", url("/"), token) for _ in range(2))
    resp = stack.call_envoy_dpop(token, first, headers=[("dpop", second)], face=face)
    assert_dpop_denied(resp, "invalid_dpop_proof")


def test_nonce_retries_with_a_wrong_or_missing_nonce_are_refused_until_the_issued_one(stack, client, face):
    key, token = client
    path = "/nonce/retry"
    first = stack.call_envoy_dpop(token, key.proof("GET", url(path), token), path=path, face=face)
    assert_dpop_denied(first, "use_dpop_nonce")
    nonce = first.header("dpop-nonce")
    # A nonce the server never issued (same shape), then a proof without any: both refused, each
    # answer carrying a fresh nonce to retry with.
    forged = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    wrong = stack.call_envoy_dpop(token, key.proof("GET", url(path), token, nonce=forged), path=path, face=face)
    assert_dpop_denied(wrong, "use_dpop_nonce")
    assert wrong.header("dpop-nonce")
    missing = stack.call_envoy_dpop(token, key.proof("GET", url(path), token), path=path, face=face)
    assert_dpop_denied(missing, "use_dpop_nonce")
    # A nonce belongs in the proof, not in a request header.
    beside = stack.call_envoy_dpop(token, key.proof("GET", url(path), token), path=path,
                                   headers=[("dpop-nonce", nonce)], face=face)
    assert_dpop_denied(beside, "use_dpop_nonce")
    ok = stack.call_envoy_dpop(token, key.proof("GET", url(path), token, nonce=nonce), path=path, face=face)
    assert ok.status == 200, ok
