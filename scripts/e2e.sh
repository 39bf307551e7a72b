#!/usr/bin/env bash
# The end-to-end suite: real nginx, Envoy, oidc-provider and Prometheus around a real certbound.
# Installs what is missing (idempotent), builds certbound, runs tests/e2e with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/e2e-install.sh
# All targets, as `cargo test --all-targets` builds them: the same dependency features, so after
# the unit tests this is nearly free, where `--bin certbound` alone would rebuild dozens of crates
# with dev-dependencies' features switched off (about 2 minutes on 2 cores).
cargo build --locked --workspace --all-targets
export CERTBOUND_BIN="${CERTBOUND_BIN:-$PWD/target/debug/certbound}"
exec .venv/bin/python -m pytest tests/e2e "$@"
