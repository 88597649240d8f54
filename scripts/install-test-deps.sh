#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine and is not there yet: Chromium and
# ChromeDriver (dashboard tests), ZooKeeper (high-availability tests; the tests start their
# own servers on free ports), Prometheus (the metric reporter test scrapes a cluster with a
# server it starts on a free port), clang with wasi-libc (the C WebAssembly example is built by the
# tests), curl, cargo-nextest, and the Kafka-protocol broker the Kafka tests start (tansu,
# built with cargo into ${FLINT_TOOLS_DIR:-$HOME/.cache/flint}, outside the repository, since
# the build takes ~12 minutes on 2 cores). Reuses whatever is installed already,
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
# tansu with its SQLite storage engine (the default build stores nothing), built at opt-level
# 1 without debug info to cut the build time. Built into a temporary root and moved into place
# only when the build succeeded, so that an interrupted build is never taken for an installed
# broker. FLINT_TANSU, when set, names a tansu binary the tests use instead.
tansu_version=0.6.0
tansu_root="${FLINT_TOOLS_DIR:-$HOME/.cache/flint}/tansu-$tansu_version"
if [ ! -x "${FLINT_TANSU:-$tansu_root/bin/tansu}" ]; then
  tansu_partial="$tansu_root.partial.$$"
  trap 'rm -rf "$tansu_partial"' EXIT
  rm -rf "$tansu_partial"
  mkdir -p "$(dirname "$tansu_root")"
  echo "building tansu $tansu_version into $tansu_root (about 12 minutes on 2 cores)"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install tansu --version "$tansu_version" --locked --features libsql --root "$tansu_partial"
  "$tansu_partial/bin/tansu" --version
  rm -rf "$tansu_root"
  mv "$tansu_partial" "$tansu_root"
fi
