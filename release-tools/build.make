# Shared make rules: version stamping and verification. Included by the
# top-level Makefile; keep project-specific targets there.

GO ?= go
# VERSION is the git description of HEAD, or "dev" outside a git checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS ?= -s -w -X main.version=$(VERSION)
GOFLAGS_BUILD ?= -trimpath

.PHONY: verify verify-gofmt verify-govet verify-vendor

# verify: formatting, vet and a vendor/ that matches go.mod (CI runs it with the tests).
verify: verify-gofmt verify-govet verify-vendor

verify-gofmt:
	release-tools/verify-gofmt.sh

verify-govet:
	$(GO) vet ./cmd/... ./pkg/... ./test/...

verify-vendor:
	release-tools/verify-vendor.sh
