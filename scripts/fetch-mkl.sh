#!/usr/bin/env bash
# Fetches Intel MKL's runtime for x86-64 Linux from the pinned PyPI wheel mkl==2026.2.0 (Intel Simplified Software
# License, in the wheel), checks the wheel's SHA-256, and unpacks the nine libraries Encore's fp32 GEMMs need
# (libmkl_rt, core, sequential threading, the LP64 interface and the CPU kernels, 442 MiB) to models/mkl/ (ignored by
# git), and prints its path. On an Intel CPU Encore then finds it by itself (ENCORE_BLAS unset or auto: models/mkl/
# above the encore executable of a SwiftPM build); ENCORE_BLAS=openblas turns it off, ENCORE_BLAS=PATH names a copy.
# In a Python environment `pip install mkl` does the same ($VIRTUAL_ENV/lib/libmkl_rt.so.3, also found by itself).
# .ci/run uses it so BLASLibraryTests' MKL tests run (ENCORE_TEST_MKL); without it they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || { echo "Intel MKL is for x86-64 Linux only" >&2; exit 1; }
VERSION=2026.2.0
WHEEL=mkl-$VERSION-py2.py3-none-manylinux_2_28_x86_64.whl
WHEEL_SHA=eaab1875ce9f47ab3c66d5632cef06baf768c05781f2f28847bdbc4343500ed7
LIBS="libmkl_rt.so.3 libmkl_core.so.3 libmkl_sequential.so.3 libmkl_intel_lp64.so.3 libmkl_def.so.3 libmkl_mc3.so.3
      libmkl_avx2.so.3 libmkl_avx512.so.3 libmkl_avx10.so.3"
DEST=models/mkl
if [ -f "$DEST/.complete-$VERSION" ] && [ -f "$DEST/libmkl_rt.so.3" ]; then
    echo "$DEST holds Intel MKL $VERSION" >&2
    echo "$(pwd)/$DEST/libmkl_rt.so.3"
    exit 0
fi
mkdir -p "$DEST"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "downloading $WHEEL (221 MB) from PyPI" >&2
python3 -m pip download --quiet --no-deps --timeout 20 --retries 1 "mkl==$VERSION" --only-binary=:all: \
    --platform manylinux_2_28_x86_64 -d "$TMP" >&2
echo "$WHEEL_SHA  $TMP/$WHEEL" | sha256sum -c --quiet - >&2 || { echo "wheel checksum mismatch" >&2; exit 1; }
python3 - "$TMP/$WHEEL" "$DEST" $LIBS <<'PY'
import os, sys, zipfile
wheel, dest, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
found = set()
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("mkl-") and "/data/lib/" in name and base in wanted:
            tmp = os.path.join(dest, f"{base}.part{os.getpid()}")   # per run: two runs never share a partial file
            with z.open(name) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, os.path.join(dest, base))   # atomic: a killed run leaves no half library
            found.add(base)
    licence = next((n for n in z.namelist() if n.endswith("dist-info/LICENSE.txt")), None)
    if licence:
        with z.open(licence) as src, open(os.path.join(dest, "LICENSE.txt"), "wb") as out:
            out.write(src.read())
missing = wanted - found
if missing:
    sys.exit("the wheel lacks " + ", ".join(sorted(missing)))
PY
touch "$DEST/.complete-$VERSION"
echo "wrote $DEST (Intel MKL $VERSION)" >&2
echo "$(pwd)/$DEST/libmkl_rt.so.3"
