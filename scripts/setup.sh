#!/usr/bin/env bash
# Installs what Encore needs on Debian/Ubuntu (OpenBLAS), only if missing. Safe to run repeatedly.
set -euo pipefail
if ! command -v swift >/dev/null 2>&1; then
  echo "error: Swift 6 is required (swift not on PATH): see https://www.swift.org/install/linux/" >&2
  exit 1
fi
if [ "$(uname -s)" = "Linux" ] && ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing libopenblas-dev…" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev >/dev/null
fi
