#!/usr/bin/env bash
# The demo: the whole stack (a real OIDC provider, nginx terminating mTLS, Envoy, certbound,
# Prometheus) on 127.0.0.1, a real client allowed and its stolen token denied. Installs what is
# missing first. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/e2e-install.sh
cargo build --release --locked --bin certbound
export CERTBOUND_BIN="$PWD/target/release/certbound"
exec .venv/bin/python tests/e2e/stack.py demo
