#!/usr/bin/env bash
# The end-to-end suite: real nginx, Envoy, oidc-provider and Prometheus around a real certbound.
# Installs what is missing (idempotent), builds certbound, runs tests/e2e with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/e2e-install.sh
cargo build --locked --bin certbound
export CERTBOUND_BIN="${CERTBOUND_BIN:-$PWD/target/debug/certbound}"
exec .venv/bin/python -m pytest tests/e2e "$@"
