"""RFC 9728 protected-resource metadata through the real Envoy, on both faces.

The peer instance's policy "discover" (route /discover/ on the mtls listeners) sets
`resource = DISCOVER_RESOURCE`: certbound answers GET /.well-known/oauth-protected-resource/discover
itself, before any check, and every challenge of the policy names that URL.
"""

from __future__ import annotations

import re
import urllib.parse

from stack import DISCOVER_RESOURCE, Response

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

