#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests in tests/ (a real certbound server
# called over gRPC, with discovery and JWKS served by a local HTTPS OpenID provider).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== unit and integration tests"
cargo test --locked --all-targets
