#!/usr/bin/env bash
# Fails when go.mod/go.sum are not tidy or vendor/ does not match them, so a
# build with -mod=vendor is the build that was reviewed.
set -euo pipefail
cd "$(dirname "$0")/.."
go mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a vendor "$tmp/vendor.before"
go mod vendor
if ! diff -qr "$tmp/vendor.before" vendor >/dev/null; then
  echo "vendor/ is out of date: run go mod vendor and commit it" >&2
  exit 1
fi
