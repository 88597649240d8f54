#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine and is not there yet: Chromium and
# ChromeDriver (dashboard tests), ZooKeeper (high-availability tests; the tests start their
# own servers on free ports), Prometheus (the metric reporter test scrapes a cluster with a
# server it starts on a free port), clang with wasi-libc (the C WebAssembly example is built by the
# tests), curl, and cargo-nextest. Reuses whatever is installed already,
# so a second run does nothing. Called by the README's test command and by .ci/run.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || missing+=(zookeeper)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null || missing+=(libclang-rt-dev-wasm32)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; else sudo=; fi
  echo "installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
