#!/usr/bin/env bash
# The main job: build Encore (release) and run the paper's efficiency study on the 330M Mu config against
# its parameter-matched decoder-only twin. Extra arguments go to `encore bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --static-swift-stdlib (Linux): the Swift runtime and Foundation linked in, a binary that runs without a Swift
# toolchain and holds 6 MiB less resident memory (22 -> 16 MiB for `encore --help`)
static=""; [ "$(uname -s)" = "Linux" ] && static="--static-swift-stdlib"
swift build -c release --product encore $static 2>&1 | grep -v '^\[' >&2 || true
exec .build/release/encore bench --preset mu-330m --input-tokens 512 --output-tokens 64 "$@"
