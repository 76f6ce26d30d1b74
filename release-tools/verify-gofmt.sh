#!/usr/bin/env bash
# Fails when a Go file outside vendor/ is not gofmt-formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(find . -name '*.go' -not -path './vendor/*' -not -path './_output/*' -not -path './test/cluster/tools/*' -print0 | xargs -0 gofmt -l)
if [ -n "$bad" ]; then
  echo "These files need gofmt -w:" >&2
  echo "$bad" >&2
  exit 1
fi
