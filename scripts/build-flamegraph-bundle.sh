#!/usr/bin/env bash
# Rebuild the vendored flame-graph bundle (run by a developer, not at install):
# d3-flame-graph (Apache-2.0) and the d3 modules it imports (ISC), bundled with
# esbuild into one IIFE that defines `window.d3flamegraph`, plus every
# licence text. Needs node + npm (the registry is reached only here).
set -euo pipefail
D3FG_VERSION="${D3FG_VERSION:-5.0.0}"
ESBUILD_VERSION="${ESBUILD_VERSION:-0.28.2}"
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/telegen/formats/flamegraph_static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "d3-flame-graph@$D3FG_VERSION" "esbuild@$ESBUILD_VERSION"
cat > entry.js <<'JS'
import flamegraph, { tooltip, colorMapper } from "d3-flame-graph";
import { select } from "d3-selection";
import { format } from "d3-format";
window.d3flamegraph = { flamegraph, tooltip, colorMapper, select, format };
JS
npx esbuild entry.js --bundle --minify --format=iife --target=es2020 \
  --legal-comments=none --outfile="$out/d3-flamegraph.bundle.min.js"
{
  echo "Third-party code in d3-flamegraph.bundle.min.js (built by scripts/build-flamegraph-bundle.sh)"
  echo
  for pkg in node_modules/d3-* node_modules/internmap; do
    [ -f "$pkg/package.json" ] || continue
    name=$(node -p "require('./$pkg/package.json').name")
    ver=$(node -p "require('./$pkg/package.json').version")
    lic=$(node -p "require('./$pkg/package.json').license")
    echo "==== $name $ver ($lic) ===="
    cat "$pkg"/LICENSE* 2>/dev/null || echo "(no licence file shipped)"
    echo
  done
} > "$out/THIRD_PARTY_LICENSES.txt"
ls -l "$out"
