#!/usr/bin/env bash
# Helm renders the key broker's chart in tests (tests/deploy/test_helm.py). Build a pinned helm from the Go
# module proxy into .work/tools/bin once; later runs only check that it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSION=v3.22.0
BIN="$PWD/.work/tools/bin"
if [ -x "$BIN/helm" ] && [ "$(cat "$BIN/.helm-version" 2>/dev/null)" = "$HELM_VERSION" ]; then exit 0; fi
command -v go >/dev/null || { echo "ensure-helm: go is needed to build helm $HELM_VERSION" >&2; exit 1; }
echo "building helm $HELM_VERSION into $BIN (a few minutes, once)" >&2
mkdir -p "$BIN"
GOBIN="$BIN" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "$HELM_VERSION" > "$BIN/.helm-version"
