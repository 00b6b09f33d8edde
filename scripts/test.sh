#!/usr/bin/env bash
# Runs the whole test suite (installs OpenBLAS first if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec swift test --disable-swift-testing "$@"
