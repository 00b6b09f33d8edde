#!/usr/bin/env bash
# Runs the whole test suite (installs OpenBLAS first if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The suite runs on the linked OpenBLAS wherever it runs, whatever Intel MKL the machine has (Encore's automatic choice
# would take one it finds); BLASLibraryTests check MKL (ENCORE_TEST_MKL) and the automatic choice explicitly.
export ENCORE_BLAS="${ENCORE_BLAS:-openblas}"
exec swift test --disable-swift-testing "$@"
