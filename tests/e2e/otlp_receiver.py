"""An OTLP/gRPC trace receiver for the end-to-end suite: the OpenTelemetry TraceService
(opentelemetry.proto.collector.trace.v1, from the official `opentelemetry-proto` package) served
with grpcio, and every exported span kept in memory.

No OTLP receiver ships on PyPI, npm or Debian (the OpenTelemetry Collector and Jaeger are Go
binaries distributed elsewhere), so the suite runs the protocol's own generated service instead.
Both Envoy's OpenTelemetry tracer and certbound's exporter send to it.

    python otlp_receiver.py GRPC_PORT HTTP_PORT

GET http://127.0.0.1:HTTP_PORT/spans answers a JSON list, one object per span received:
{"service", "name", "kind", "trace_id", "span_id", "parent_span_id" (hex, "" for a root),
"attributes" {key: value as text}}. GET /raw answers every Export request as received, base64
of its protobuf bytes, one per line: what the exporters sent, byte for byte.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()
SPANS: list[dict] = []
RAW: list[bytes] = []


def _value(v) -> str:
    """An AnyValue as text (the suite compares strings and searches for secrets)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(v, kind))
    return str(getattr(v, kind))


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 - the proto's method name
        spans = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans.append({
                        "service": service,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    })
        with LOCK:
            SPANS.extend(spans)
            RAW.append(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


class Query(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        with LOCK:
            if self.path == "/spans":
                body = json.dumps(SPANS).encode()
            elif self.path == "/raw":
                body = b"\n".join(base64.b64encode(r) for r in RAW)
            elif self.path == "/healthz":
                body = b"ok\n"
            else:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main(argv: list[str]) -> int:
    grpc_port, http_port = int(argv[0]), int(argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    query = ThreadingHTTPServer(("127.0.0.1", http_port), Query)
    print(f"OTLP receiver: gRPC 127.0.0.1:{grpc_port}, spans at http://127.0.0.1:{http_port}/spans", flush=True)
    try:
        query.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
