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

from stack import DPOP_BASE_URL, DpopKey, Response, jwt_parts


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


def test_valid_proof_is_allowed_and_upstream_sees_a_bearer_request(stack, client):
    key, token = client
    resp = stack.call_envoy_dpop(token, key.proof("GET", url("/orders"), token), path="/orders?page=2")
    assert resp.status == 200, resp
    upstream = resp.upstream_headers
    assert upstream.get("authorization") == f"Bearer {token}", "scheme rewritten to Bearer"
    assert "dpop" not in upstream, "the proof never reaches the upstream"
    assert upstream.get("x-consumer-sub") == "dpop-app"


def test_replayed_proof_is_refused_by_the_same_replica(stack, client):
    key, token = client
    proof = key.proof("GET", url("/"), token)
    assert stack.call_envoy_dpop(token, proof).status == 200
    assert_dpop_denied(stack.call_envoy_dpop(token, proof), "invalid_dpop_proof")


def test_replayed_proof_is_refused_by_another_replica_sharing_redis(stack, client):
    key, token = client
    proof = key.proof("GET", url("/"), token)
    assert stack.call_envoy_dpop(token, proof, replica=1).status == 200
    assert_dpop_denied(stack.call_envoy_dpop(token, proof, replica=2), "invalid_dpop_proof")


@pytest.mark.parametrize("case", ["htm", "htu", "ath", "stale_iat", "other_key", "forged_key"])
def test_proofs_not_matching_the_request_or_token_are_refused(stack, client, case):
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
    assert_dpop_denied(stack.call_envoy_dpop(token, proof), error)


def test_dpop_bound_token_sent_as_bearer_is_refused(stack, client):
    key, token = client
    resp = stack.call_envoy_dpop(token, key.proof("GET", url("/"), token), scheme="Bearer")
    assert_dpop_denied(resp, "invalid_token")


def test_nonce_round_trip_across_replicas(stack, client):
    key, token = client
    first = stack.call_envoy_dpop(token, key.proof("GET", url("/nonce/x"), token), path="/nonce/x")
    assert_dpop_denied(first, "use_dpop_nonce")
    nonce = first.header("dpop-nonce")
    assert nonce and re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce), first
    # The other replica shares the nonce secret: the nonce one issued, the other accepts.
    retry = stack.call_envoy_dpop(token, key.proof("GET", url("/nonce/x"), token, nonce=nonce),
                                  path="/nonce/x", replica=2)
    assert retry.status == 200, retry
