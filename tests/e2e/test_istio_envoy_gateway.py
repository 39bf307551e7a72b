"""Per-route policies where the control plane cannot name one: Istio and Envoy Gateway.

Envoy's listeners "istio" and "envoy_gateway" carry the authorization filters exactly as Istio
(an AuthorizationPolicy with action CUSTOM, an envoyExtAuthzGrpc provider) and Envoy Gateway (a
SecurityPolicy with extAuth.grpc) write them: no context_extensions, no per-route certbound
setting (deploy/envoy/generate.py, docs/deploy-istio.md, docs/deploy-envoy-gateway.md). Both
terminate mTLS, write XFCC themselves and ask certbound "routes", whose [[routes]] pick the policy:
on api.test, /es/ is policy "es-only" (ES256-audience tokens only), the rest is the default
policy, and any other host is denied (unmatched_route = "deny").

What decides whether certbound is asked at all is each control plane's own mechanism, proven here
too: Istio's RBAC shadow rules (the AuthorizationPolicy's notPaths ["/healthz"]) gate ext_authz
through filter_enabled_metadata; Envoy Gateway switches its disabled filter on only on the routes
of the HTTPRoute its SecurityPolicy targets.
"""

from __future__ import annotations

import pytest

from stack import AUDIENCE_ES, AUDIENCE_RS, CONTROL_PLANE_LISTENERS, ROUTES_HOST, Response, StackError, wait_until


@pytest.fixture(params=CONTROL_PLANE_LISTENERS)
def listener(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def alice_rs(stack) -> str:
    return stack.get_token("alice-app", AUDIENCE_RS)


@pytest.fixture(scope="module")
def bob_es(stack) -> str:
    return stack.get_token("bob-app", AUDIENCE_ES)


def decisions(stack, decision: str, reason: str) -> float:
    return stack.certbound_metric("routes", "certbound_decisions_total", decision=decision, reason=reason)


def counted(stack, decision: str, reason: str, want: float) -> float:
    """The counter once it reaches `want` (polled, bounded: it is counted as the answer leaves)."""
    try:
        return wait_until(f"{decision}/{reason} == {want}",
                          lambda: decisions(stack, decision, reason) == want and want, 5)
    except StackError:  # report the value it stopped at
        return decisions(stack, decision, reason)


def assert_allowed(resp: Response, sub: str) -> None:
    assert resp.status == 200, resp
    assert resp.upstream is not None, resp
    assert resp.upstream_headers.get("x-consumer-sub") == sub, resp.upstream_headers


def test_a_route_rule_picks_the_policy_istio_and_envoy_gateway_cannot_name(stack, listener, alice_rs, bob_es):
    before = decisions(stack, "deny", "audience_not_allowed")
    # The rest of api.test: the default policy takes alice's bound RS256-audience token.
    assert_allowed(stack.call_envoy_control_plane(listener, "alice", alice_rs, path="/orders"), "alice-app")
    # /es/ on the same host, same listener, same filter: the rule names "es-only", which wants
    # the ES256 API's audience. The same token and certificate are refused there...
    resp = stack.call_envoy_control_plane(listener, "alice", alice_rs, path="/es/orders")
    assert resp.status == 403, resp
    assert resp.upstream is None, resp
    assert 'error="insufficient_scope"' in (resp.www_authenticate or ""), resp
    assert counted(stack, "deny", "audience_not_allowed", before + 1) == before + 1
    # ...and a token for that API passes.
    assert_allowed(stack.call_envoy_control_plane(listener, "bob", bob_es, path="/es/orders"), "bob-app")


def test_the_gateways_xfcc_still_binds_the_token_behind_route_rules(stack, listener, alice_rs):
    resp = stack.call_envoy_control_plane(listener, "bob", alice_rs, path="/orders")
    assert resp.status == 401, resp
    assert 'error="invalid_token"' in (resp.www_authenticate or ""), resp


def test_a_host_no_rule_names_is_denied_with_unmatched_route_deny(stack, listener, alice_rs):
    before = decisions(stack, "deny", "no_matching_route")
    resp = stack.call_envoy_control_plane(listener, "alice", alice_rs, path="/orders", host="other.test")
    assert resp.status == 403, resp
    assert resp.upstream is None, resp
    assert counted(stack, "deny", "no_matching_route", before + 1) == before + 1
    # Another spelling of a named host (case, port) is that host: it matches its rule.
    assert_allowed(stack.call_envoy_control_plane(listener, "alice", alice_rs, path="/orders",
                                         host=ROUTES_HOST.upper() + ":443"), "alice-app")


def test_only_requests_the_control_plane_selects_reach_certbound(stack, listener):
    before = decisions(stack, "deny", "missing_token")
    shadow = f"http.{listener}.rbac.istio_ext_authz_.shadow_denied"
    shadow_before = stack.envoy_stat(shadow) if listener == "istio" else None
    # /healthz without any token passes: certbound would have refused it (missing_token), so it
    # was never asked. Under Istio the shadow rule (notPaths /healthz) did not match, so the
    # ext_authz filter stayed off; under Envoy Gateway the health HTTPRoute has no SecurityPolicy,
    # so its route never switches the filter on.
    health = stack.call_envoy_control_plane(listener, "alice", None, path="/healthz")
    assert health.status == 200, health
    assert health.upstream is not None and health.upstream["path"] == "/healthz", health
    # One segment more is another path: selected, checked, refused.
    resp = stack.call_envoy_control_plane(listener, "alice", None, path="/healthz/x")
    assert resp.status == 401, resp
    assert resp.www_authenticate is not None and resp.www_authenticate.startswith("Bearer "), resp
    assert counted(stack, "deny", "missing_token", before + 1) == before + 1
    if listener == "istio":
        # The RBAC filter recorded exactly one CUSTOM rule match: the checked request.
        assert shadow_before is not None
        assert stack.envoy_stat(shadow) == shadow_before + 1
