#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests in tests/ (a real certbound server called
# over gRPC, with discovery and JWKS from a local HTTPS OpenID provider), then the end-to-end
# suite against real nginx, Envoy, oidc-provider and Prometheus (scripts/e2e.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

# First: the integration tests need redis-server too (tests/dpop.rs). Idempotent, so
# scripts/e2e.sh's own run of it below is quick.
echo "== install the real peers"
bash scripts/e2e-install.sh

echo "== unit and integration tests"
cargo test --locked --workspace --all-targets

echo "== end-to-end suite"
scripts/e2e.sh
