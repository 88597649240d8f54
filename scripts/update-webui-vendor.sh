#!/usr/bin/env bash
# Fetches the dashboard's third-party libraries from the npm registry into
# webui/static/vendor/ (the files the browser loads, and each package's license) and
# records versions, the registry's integrity hashes and the files' sha256 in
# webui/vendor.json. The files are committed, so building Flint needs neither node nor the
# network; `cargo test -p flint-webui` checks the committed files against vendor.json.
#
#   scripts/update-webui-vendor.sh           fetch the versions below and rewrite
#   scripts/update-webui-vendor.sh --check   fetch them and fail if the committed files differ
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  file in the package  -> file under webui/static/vendor/
PACKAGES=(
  "@dagrejs/dagre@3.1.3 dist/dagre.min.js=dagre.min.js LICENSE=dagre.LICENSE.txt"
  "@dagrejs/graphlib@4.0.6 LICENSE=graphlib.LICENSE.txt"
  "uplot@1.6.32 dist/uPlot.iife.min.js=uPlot.iife.min.js dist/uPlot.min.css=uPlot.min.css LICENSE=uPlot.LICENSE.txt"
)
check=false
[ "${1:-}" = "--check" ] && check=true

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out="$work/vendor"
mkdir -p "$out"
: > "$work/packages"
for entry in "${PACKAGES[@]}"; do
  read -r spec files <<<"$entry"
  name=${spec%@*}
  version=${spec##*@}
  meta=$(curl -fsS "https://registry.npmjs.org/${name/\//%2f}/$version")
  tarball=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["tarball"])' <<<"$meta")
  integrity=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["integrity"])' <<<"$meta")
  license=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("license", ""))' <<<"$meta")
  curl -fsS -o "$work/p.tgz" "$tarball"
  got="sha512-$(openssl dgst -sha512 -binary "$work/p.tgz" | base64 -w0)"
  [ "$got" = "$integrity" ] || { echo "$spec: tarball integrity $got, registry says $integrity" >&2; exit 1; }
  rm -rf "$work/p" && mkdir "$work/p" && tar -xzf "$work/p.tgz" -C "$work/p"
  for f in $files; do
    cp "$work/p/package/${f%%=*}" "$out/${f#*=}"
  done
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$version" "$license" "$tarball" "$integrity" >> "$work/packages"
done
python3 - "$work/packages" "$out" > "$work/vendor.json" <<'PY'
import hashlib, json, os, sys
packages = [dict(zip(["name", "version", "license", "tarball", "integrity"], l.rstrip("\n").split("\t")))
            for l in open(sys.argv[1])]
files = {f"vendor/{f}": hashlib.sha256(open(os.path.join(sys.argv[2], f), "rb").read()).hexdigest()
         for f in sorted(os.listdir(sys.argv[2]))}
print(json.dumps({"packages": packages, "files": files}, indent=2))
PY
if $check; then
  diff -r "$out" webui/static/vendor && diff "$work/vendor.json" webui/vendor.json \
    && echo "webui/static/vendor is what npm serves for these versions" && exit 0
  echo "webui/static/vendor differs from npm: run scripts/update-webui-vendor.sh" >&2
  exit 1
fi
rm -rf webui/static/vendor && cp -r "$out" webui/static/vendor && cp "$work/vendor.json" webui/vendor.json
echo "updated webui/static/vendor and webui/vendor.json"
