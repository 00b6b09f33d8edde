#!/usr/bin/env bash
# Kernel parity in plain C (Tests/NativeKernels/kernel_parity.c): every SIMD path of Sources/EncoreKernels against
# its plain reference, in three builds:
#   1. native (x86-64: the AVX2 paths, and AVX-VNNI / AVX-512 where this CPU has them), by cc and again by clang;
#   2. x86-64 with the AVX-VNNI and AVX-512 paths emulated: SIMDe (Debian's libsimde-dev, header-only) implements
#      their intrinsics in C (Tests/NativeKernels/emulated/immintrin.h) and EK_EMULATED_FEATURES makes the kernels
#      dispatch to them, twice: every feature (int8/Q8_0/Q4 GEMVs and the prompt GEMMs on "avx512vnni", bf16 on
#      "avx512bf16"; capping the ISA level runs "avxvnni" and "avx2" too) and AVX-512F + AVX-VNNI only (bf16 on
#      "avx512f", the integer kernels on "avxvnni"); the host's own AVX-512 / VNNI bits are replaced, not added to;
#   3. arm64 (NEON) cross-compiled and run under qemu-aarch64, twice: on qemu's default CPU (SDOT present: the
#      "neon-dotprod" int8 path) and on a Cortex-A53 (no SDOT: "neon").
#
#   bash scripts/test-kernels.sh            all three (installs the tools with apt-get when root)
#   bash scripts/test-kernels.sh --native   native only
#
# Needs: libsimde-dev for 2; for 3 a clang that targets aarch64 (the Swift toolchain's) with ld.lld, or
# aarch64-linux-gnu-gcc; qemu-user; libc6-dev-arm64-cross and libgcc-12-dev-arm64-cross (Debian). When they are
# missing and cannot be installed, that part prints SKIP (ENCORE_EMULATION_REQUIRED=1 / ENCORE_NEON_REQUIRED=1 make
# it a failure). C sources build with -Werror.
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
# SwiftPM builds the kernels with clang: the plain twins' bytes must not depend on the compiler (session 28: clang's
# vectorised plain quantizers turned NaN into −128 where gcc's gave 0, until cvt_low8 defined the cast)
clang_native=$(find_clang || true)
if [ -n "$clang_native" ] && [ "$(readlink -f "$clang_native")" != "$(readlink -f "$cc_native")" ]; then
  echo "== kernel parity, native, built by clang (as SwiftPM builds the kernels) =="
  "$clang_native" "${flags[@]}" "${srcs[@]}" -lm -lpthread -o "$out/kernel_parity_clang"
  "$out/kernel_parity_clang"
fi
[ "${1:-}" = "--native" ] && exit 0

emulated_x86() {
  [ "$(uname -m)" = x86_64 ] || { echo "(not x86-64: no emulated x86 build)"; return 0; }
  echo "== kernel parity, x86-64 with AVX-VNNI and AVX-512 emulated by SIMDe =="
  if [ ! -f /usr/include/simde/x86/avx512.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libsimde-dev ..."
    (apt-get install -y --no-install-recommends libsimde-dev >/dev/null 2>&1 ||
     { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends libsimde-dev >/dev/null 2>&1; }) || true
  fi
  if [ ! -f /usr/include/simde/x86/avx512.h ]; then
    echo "SKIP emulated AVX-VNNI/AVX-512 parity: SIMDe is missing (install libsimde-dev)"
    [ "${ENCORE_EMULATION_REQUIRED:-0}" = 1 ] && exit 1
    return 0
  fi
  local cc_emu
  cc_emu=$(command -v gcc || command -v cc)
  local all='(EK_CPU_AVX512F|EK_CPU_AVX512BWVL|EK_CPU_AVX512VNNI|EK_CPU_AVX512BF16|EK_CPU_AVXVNNI)'
  local no512vnni='(EK_CPU_AVX512F|EK_CPU_AVX512BWVL|EK_CPU_AVXVNNI)'
  "$cc_emu" "${flags[@]}" -Wno-psabi -ITests/NativeKernels/emulated "-DEK_EMULATED_FEATURES=$all" "${srcs[@]}" \
    -lm -lpthread -o "$out/kernel_parity_emulated" &
  local pid_all=$!
  "$cc_emu" "${flags[@]}" -Wno-psabi -ITests/NativeKernels/emulated "-DEK_EMULATED_FEATURES=$no512vnni" "${srcs[@]}" \
    -lm -lpthread -o "$out/kernel_parity_emulated_f" &
  local pid_f=$!
  local rc_all=0 rc_f=0
  wait "$pid_all" || rc_all=$?
  wait "$pid_f" || rc_f=$?
  if [ "$rc_all" -ne 0 ] || [ "$rc_f" -ne 0 ]; then echo "emulated build failed"; exit 1; fi
  echo "-- AVX-512F/BW/VL, AVX512-VNNI, AVX512-BF16, AVX-VNNI --"
  "$out/kernel_parity_emulated"
  echo "-- AVX-512F/BW/VL and AVX-VNNI (no AVX512-VNNI, no AVX512-BF16) --"
  "$out/kernel_parity_emulated_f"
}
emulated_x86

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
