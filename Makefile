# csi-provisioner: build, test and the local test bed.
# Shared rules (verify scripts, build flags) live in release-tools/.

GO ?= go
OUTPUT := _output
BIN := $(OUTPUT)/bin

.PHONY: all build test test-unit test-e2e verify cluster-up cluster-down demo bench clean

all: build

# build: the sidecar and the test CSI driver, into _output/bin.
build:
	mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/csi-provisioner ./cmd/csi-provisioner
	CGO_ENABLED=0 $(GO) build -o $(BIN)/csi-test-driver ./test/csidriver/cmd/csi-test-driver

clean:
	rm -rf $(OUTPUT)
