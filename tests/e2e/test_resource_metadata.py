"""RFC 9728 protected-resource metadata through the real Envoy, on both faces.

The peer instance's policy "discover" (route /discover/ on the mtls listeners) sets
`resource = DISCOVER_RESOURCE`: certbound answers GET /.well-known/oauth-protected-resource/discover
itself, before any check, and every challenge of the policy names that URL. A real discovering
client (oauth4webapi, tests/e2e/idp/discover.mjs) goes from a bare 401 to the metadata and the
authorization server; the token it would then ask for is the suite's bound token.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse

from stack import AUDIENCE_RS, DISCOVER_RESOURCE, E2E, Response, find_node

METADATA_URL = "https://api.mtls.test/.well-known/oauth-protected-resource/discover"
HOST = urllib.parse.urlsplit(DISCOVER_RESOURCE).netloc


def resource_metadata(resp: Response) -> list[str]:
    """The resource_metadata parameter of every WWW-Authenticate line."""
    lines = [v for k, v in resp.headers if k.lower() == "www-authenticate"]
    return [m for line in lines for m in re.findall(r'resource_metadata="([^"]*)"', line)]


def test_a_bare_request_is_challenged_with_the_metadata_url(stack, face):
    resp = stack.call_envoy_mtls("alice", None, path="/discover/orders", face=face, host=HOST)
    assert resp.status == 401, resp
    assert resp.www_authenticate.startswith("Bearer "), resp
    assert resource_metadata(resp) == [METADATA_URL], resp.headers


def test_the_metadata_url_through_envoy_is_the_document_naming_the_idp(stack, face):
    path = urllib.parse.urlsplit(METADATA_URL).path
    resp = stack.call_envoy_mtls("alice", None, path=path, face=face, host=HOST)
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/json", resp.headers
    assert resp.upstream is None, "answered by certbound, not the upstream"
    assert resp.json() == {
        "resource": DISCOVER_RESOURCE,
        "authorization_servers": [stack.issuer],
        "bearer_methods_supported": ["header"],
        "tls_client_certificate_bound_access_tokens": True,
        "dpop_bound_access_tokens_required": False,
    }


def test_policies_without_a_resource_name_no_metadata(stack, face):
    resp = stack.call_envoy_mtls("alice", None, path="/", face=face)
    assert resp.status == 401, resp
    assert resource_metadata(resp) == [], resp.headers


def test_oauth4webapi_discovers_the_authorization_server_from_a_bare_401(stack, face):
    args = {
        "resource": DISCOVER_RESOURCE,
        "path": "/discover/orders",
        "envoy_port": stack.envoy_port("mtls", face),
        "ca": str(stack.pki / "server-ca.pem"),
        "cert": str(stack.pki / "alice-chain.pem"),
        "key": str(stack.pki / "alice-key.pem"),
    }
    run = subprocess.run([find_node(), E2E / "idp" / "discover.mjs", json.dumps(args)],
                         capture_output=True, text=True, timeout=60, cwd=E2E / "idp")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    # The client's two requests through Envoy were denied by certbound: the bare one and the one
    # with a token oauth4webapi made up to read the challenge back through its own parser.
    counter = stack.expected_decisions["peer"] if face == "ext_authz" else stack.expected_module_decisions
    counter["deny"] += 2

    assert found["bare"]["status"] == 401, found
    assert found["bare"]["resource_metadata"] == METADATA_URL, found
    assert {"scheme": "bearer", "resource_metadata": METADATA_URL} in [
        {"scheme": c["scheme"], "resource_metadata": c["parameters"].get("resource_metadata")}
        for c in found["parsed"]
    ], found["parsed"]
    # The library derives the well-known URL from the identifier itself (§3.1): it is the URL
    # certbound's challenge named.
    assert found["metadata_url"] == METADATA_URL, found
    assert found["metadata"]["resource"] == DISCOVER_RESOURCE
    assert found["metadata"]["tls_client_certificate_bound_access_tokens"] is True
    assert found["authorization_server"]["issuer"] == stack.issuer
    assert found["authorization_server"]["token_endpoint"] == f"{stack.issuer}/token"

    # What the client then does: a certificate-bound token from that authorization server, sent
    # with the certificate it is bound to.
    token = stack.get_token("alice-app", AUDIENCE_RS)
    resp = stack.call_envoy_mtls("alice", token, path="/discover/orders", face=face, host=HOST)
    assert resp.status == 200, resp
    assert resp.upstream is not None and resp.upstream_headers.get("x-consumer-sub") == "alice-app", resp
