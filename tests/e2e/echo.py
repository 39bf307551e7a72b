"""Echo upstream for certbound's end-to-end suite.

Answers every request with 200 and a JSON object describing what reached the upstream, so a test
can see which headers Envoy forwarded after certbound allowed the request (e.g. `x-consumer-sub`
added, `authorization` or the certificate header removed):

    {"method": "GET", "path": "/x", "headers": {"x-consumer-sub": "alice-app", ...}}

Header names are lower-cased; a header sent more than once is returned as a list.
Usage: python echo.py PORT   (binds 127.0.0.1 only)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: Envoy pools upstream connections.
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)  # drain the body so the connection stays usable
        headers: dict[str, object] = {}
        for name, value in self.headers.items():
            key = name.lower()
            if key in headers:
                prev = headers[key]
                headers[key] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                headers[key] = value
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _echo

    def log_message(self, fmt: str, *args: object) -> None:
        # One line per request on stderr (kept in the run's log); never the headers (tokens).
        sys.stderr.write("echo %s\n" % (fmt % args))


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    print(f"echo ready on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
