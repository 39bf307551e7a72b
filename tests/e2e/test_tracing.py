"""Request ids, trace ids and OpenTelemetry spans, end to end.

Envoy's "plain" listener traces with its OpenTelemetry tracer into the suite's OTLP receiver
(otlp_receiver.py: the protocol's own TraceService), and certbound "header" exports its check
spans there too. A client request carrying a W3C `traceparent` must then show, in what the
receiver got: Envoy's spans in the client's trace, certbound's check span as the child of
Envoy's ext_authz span with the decision, reason and policy, and not one byte of the token or
the certificate. The deny log line of either face names the request id and trace id that
Envoy's access log prints for the same request.
"""

from __future__ import annotations

import base64
import os
import re
import time

from stack import CERT_HEADER, wait_until

SPAN_NAME = "envoy.service.auth.v3.Authorization/Check"
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
# A run of this many characters of the certificate's base64 or DER in an export counts as a leak.
CERT_RUN = 40


def new_traceparent() -> tuple[str, str, str]:
    """(traceparent, trace id, parent span id): a sampled W3C parent, fresh ids."""
    trace, parent = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace}-{parent}-01", trace, parent


def access_line(stack, marker: str) -> str:
    """Envoy's access-log line of the request whose path is `marker` (bounded wait: Envoy
    flushes its log file every `--file-flush-interval-msec`, 10 s by default)."""
    log = stack.logs / "envoy.log"
    return wait_until(f"access log line for {marker}",
                      lambda: next((l for l in log.read_text(errors="replace").splitlines()
                                    if f" {marker} " in l and "decision=" in l), None), 30, interval=0.2)


def field(line: str, name: str) -> str:
    """`name=value` or `name="value"` from a log line."""
    m = re.search(rf'\b{name}="?([^"\s]*)"?', line)
    assert m, f"no {name} in {line!r}"
    return m.group(1)


def test_the_check_span_is_the_child_of_envoys_ext_authz_span_and_holds_no_credential(stack):
    token = stack.get_token("alice-app")
    tp, trace, client_parent = new_traceparent()
    # Before the traced request: certbound "peer" has no [tracing] and must export nothing.
    _, untraced, _ = new_traceparent()
    peer = stack.call_envoy_mtls("alice", token, headers={"traceparent": f"00-{untraced}-{'1' * 16}-01"})
    assert peer.status == 200, peer
    marker = f"/tracing-{time.time_ns()}"
    resp = stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("bob"), "traceparent": tp}, token, path=marker)
    assert resp.status == 401 and 'error="invalid_token"' in (resp.www_authenticate or ""), resp

    def spans_of_trace():
        spans = [s for s in stack.otlp_spans() if s["trace_id"] == trace]
        mine = [s for s in spans if s["service"] == "certbound"]
        ids = {s["span_id"] for s in spans}
        # Envoy exports in batches of its own: wait for the ext_authz span too.
        return spans if mine and all(s["parent_span_id"] in ids for s in mine) else None

    spans = wait_until("certbound's and Envoy's spans of the trace", spans_of_trace, 30, interval=0.5)
    ours = [s for s in spans if s["service"] == "certbound"]
    assert len(ours) == 1, ours
    check = ours[0]
    assert check["name"] == SPAN_NAME and check["kind"] == SERVER, check
    assert check["attributes"] == {
        "certbound.decision": "deny", "certbound.reason": "binding_mismatch", "certbound.policy": "default",
    }, check
    parent = next(s for s in spans if s["span_id"] == check["parent_span_id"])
    assert parent["service"] == "envoy", parent
    assert "Authorization" in parent["name"] and "Check" in parent["name"], f"not Envoy's ext_authz span: {parent}"
    envoy = [s for s in spans if s["service"] == "envoy"]
    assert any(s["parent_span_id"] == client_parent for s in envoy), \
        f"Envoy did not continue the client's trace: {envoy}"

    assert not [s for s in stack.otlp_spans() if s["trace_id"] == untraced and s["service"] == "certbound"], \
        "certbound without [tracing] exported a span"

    # Not one byte of the token or the certificate left in any export, Envoy's or certbound's.
    raw = b"".join(stack.otlp_raw())
    assert token.encode() not in raw
    for segment in token.split("."):
        assert segment.encode() not in raw, f"a token segment was exported: {segment[:8]}..."
    pem_body = "".join(l for l in stack.cert_pem("bob").splitlines() if not l.startswith("-----"))
    der = base64.b64decode(pem_body)
    for text in (pem_body, stack.cert_url_encoded("bob")):
        for i in range(0, len(text) - CERT_RUN, CERT_RUN):
            assert text[i:i + CERT_RUN].encode() not in raw, "certificate text was exported"
    for i in range(0, len(der) - CERT_RUN, CERT_RUN):
        assert der[i:i + CERT_RUN] not in raw, "certificate bytes were exported"

    # The deny log line joins Envoy's access-log line: the same request id and trace id.
    access = access_line(stack, marker)
    log = stack.logs / "certbound-header.log"
    deny = wait_until("certbound's deny line", lambda: next(
        (l for l in log.read_text(errors="replace").splitlines() if f"path={marker}" in l.replace('"', "")
         or f'"path":"{marker}"' in l), None), 10, interval=0.2)
    assert field(deny, "reason") == "binding_mismatch", deny
    assert field(deny, "trace_id") == trace == field(access, "trace_id"), (deny, access)
    request_id = field(access, "request_id")
    assert request_id not in ("", "-"), access
    assert field(deny, "request_id") == request_id, (deny, access)
    assert token not in log.read_text(errors="replace")


def test_the_modules_deny_line_names_the_request_and_trace_ids_of_its_access_log_line(stack):
    token = stack.get_token("alice-app")
    tp, trace, _ = new_traceparent()
    marker = f"/tracing-module-{time.time_ns()}"
    resp = stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("bob"), "traceparent": tp}, token,
                                  path=marker, face="module")
    assert resp.status == 401, resp
    access = access_line(stack, marker)
    log = stack.logs / "envoy.log"
    deny = wait_until("the module's deny line", lambda: next(
        (l for l in log.read_text(errors="replace").splitlines()
         if "certbound: deny" in l and f"trace_id={trace}" in l), None), 30, interval=0.2)
    assert "reason=binding_mismatch policy=default status=401" in deny, deny
    request_id = field(access, "request_id")
    assert request_id not in ("", "-"), access
    assert field(deny, "request_id") == request_id, (deny, access)


def test_a_forged_traceparent_never_reaches_the_modules_deny_line(stack):
    """The module reads `traceparent` from the request itself (that listener does not trace): a
    value that is not a W3C traceparent (here one smuggling a log field) reads as absent."""
    token = stack.get_token("alice-app")
    forged = "00-" + "a" * 32 + "-" + "b" * 16 + "-01 reason=allow"
    marker = f"/tracing-forged-{time.time_ns()}"
    resp = stack.call_envoy_plain({CERT_HEADER: stack.cert_url_encoded("bob"), "traceparent": forged}, token,
                                  path=marker, face="module")
    assert resp.status == 401, resp
    request_id = field(access_line(stack, marker), "request_id")
    log = stack.logs / "envoy.log"
    deny = wait_until("the module's deny line", lambda: next(
        (l for l in log.read_text(errors="replace").splitlines()
         if "certbound: deny" in l and f"request_id={request_id} " in l), None), 30, interval=0.2)
    assert deny.rstrip().endswith("trace_id="), deny
    assert "reason=allow" not in deny and "a" * 32 not in deny, deny
