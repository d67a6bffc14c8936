#!/usr/bin/env bash
# Azurite (Microsoft's Azure Storage emulator) for the ADLS/Blob tests and `ppml demo --storage azurite`.
# Installed once into the project's .work/tools/azurite (git-ignored); a second run is a no-op.
set -euo pipefail
VERSION=3.37.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="$ROOT/.work/tools/azurite"  # where ppml.testing.azurite looks (or set PPML_AZURITE_BIN)
BIN="$PREFIX/node_modules/.bin/azurite-blob"
if [ -x "$BIN" ] && grep -q "\"version\": \"$VERSION\"" "$PREFIX/node_modules/azurite/package.json" 2>/dev/null; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: Azurite needs Node.js 18+ and npm (e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
echo "installing azurite@$VERSION into $PREFIX" >&2
mkdir -p "$PREFIX"
npm install --no-audit --no-fund --silent --save-exact --prefix "$PREFIX" "azurite@$VERSION" >&2
test -x "$BIN"
