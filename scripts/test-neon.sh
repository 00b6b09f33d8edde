#!/usr/bin/env bash
# Kernel parity in plain C (Tests/NativeKernels/kernel_parity.c): every SIMD path of Sources/EncoreKernels against
# its plain reference, natively (x86-64: AVX2) and for arm64 (NEON) cross-compiled and run under qemu-aarch64,
# twice: on qemu's default CPU (SDOT present: the "neon-dotprod" int8 path) and on a Cortex-A53 (no SDOT: "neon").
#
#   bash scripts/test-neon.sh            native + arm64 (installs the cross tools with apt-get when root)
#   bash scripts/test-neon.sh --native   native only
#
# Needs: a clang that targets aarch64 (the Swift toolchain's) with ld.lld, or aarch64-linux-gnu-gcc; qemu-user;
# libc6-dev-arm64-cross and libgcc-12-dev-arm64-cross (Debian). When they are missing and cannot be installed, the
# arm64 part prints SKIP and exits 0 (ENCORE_NEON_REQUIRED=1 makes that a failure). C sources build with -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
srcs=(Sources/EncoreKernels/*.c Tests/NativeKernels/kernel_parity.c)
flags=(-O2 -std=gnu11 -Wall -Wextra -Werror -ISources/EncoreKernels/include)

find_clang() {
  for c in clang "$(dirname "$(readlink -f "$(command -v swift 2>/dev/null || echo /nonexistent)")")/clang" /opt/swift/usr/bin/clang; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

echo "== kernel parity, native ($(uname -m)) =="
cc_native=$(command -v cc || find_clang)
"$cc_native" "${flags[@]}" "${srcs[@]}" -lm -lpthread -o "$out/kernel_parity"
"$out/kernel_parity"
[ "${1:-}" = "--native" ] && exit 0

echo "== kernel parity, arm64 NEON under qemu-aarch64 =="
sysroot=/usr/aarch64-linux-gnu
qemu=${QEMU_AARCH64:-qemu-aarch64}
gcclib=$(ls -d /usr/lib/gcc-cross/aarch64-linux-gnu/* 2>/dev/null | sort -V | tail -1 || true)
have_tools() { command -v "$qemu" >/dev/null && [ -f "$sysroot/lib/libc.a" ] && [ -n "$gcclib" ] && [ -f "$gcclib/libgcc.a" ]; }
if ! have_tools && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing qemu-user libc6-dev-arm64-cross libgcc-12-dev-arm64-cross ..."
  (apt-get install -y --no-install-recommends qemu-user libc6-dev-arm64-cross libgcc-12-dev-arm64-cross >/dev/null 2>&1 ||
   { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends qemu-user libc6-dev-arm64-cross libgcc-12-dev-arm64-cross >/dev/null 2>&1; }) || true
  gcclib=$(ls -d /usr/lib/gcc-cross/aarch64-linux-gnu/* 2>/dev/null | sort -V | tail -1 || true)
fi
skip() {
  echo "SKIP arm64 NEON parity: $1 (install qemu-user libc6-dev-arm64-cross libgcc-12-dev-arm64-cross)"
  [ "${ENCORE_NEON_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}
have_tools || skip "qemu-aarch64 or the arm64 cross libc/libgcc is missing"
bin="$out/kernel_parity_arm64"
if command -v aarch64-linux-gnu-gcc >/dev/null; then
  aarch64-linux-gnu-gcc "${flags[@]}" -static "${srcs[@]}" -lm -lpthread -o "$bin"
else
  clang=$(find_clang) || skip "no clang for the cross build"
  command -v ld.lld >/dev/null || [ -x "$(dirname "$clang")/ld.lld" ] || skip "no ld.lld for the cross build"
  "$clang" --target=aarch64-linux-gnu --sysroot="$sysroot" -fuse-ld=lld -static -B"$gcclib" -L"$gcclib" \
    "${flags[@]}" "${srcs[@]}" -lm -lpthread -o "$bin"
fi
echo "-- qemu default CPU (max: SDOT) --"
"$qemu" "$bin"
echo "-- qemu -cpu cortex-a53 (no SDOT) --"
"$qemu" -cpu cortex-a53 "$bin"
