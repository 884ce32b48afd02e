# rds-csi build and test entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# grpcnotrace keeps golang.org/x/net/trace (and with it html/template, whose reflection
# retains every exported method) out of the binary: 3 MiB smaller and less resident memory.
export GOFLAGS := -tags=grpcnotrace
PKGS    := ./...

.PHONY: all build test deps fmt-check vet lint unit e2e e2e-kube demo bench bench-vm image clean

all: build

## build: static, stripped bin/rds-csi and the simulator bin/rds-sim
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/rds-csi .
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/rds-sim ./cmd/rds-sim

## test: everything CI runs: prerequisites, formatting, vet, unit tests under -race, end-to-end suites
test: deps fmt-check vet unit e2e

## deps: install what the suites need (idempotent; apt and the Go module proxy only)
deps:
	./test/install-deps.sh
	$(GO) mod download

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint: fmt-check vet

unit:
	$(GO) test -race -count=1 $(PKGS)

## e2e: the real-kernel suites inside the VM (NVMe/TCP target + initiator)
e2e:
	./test/vm/run-e2e.sh

## e2e-kube: the driver under a real kubelet (root; not part of `make test`: the first build of
## Kubernetes and the sidecars takes ~15 min, then a run ~4 min)
e2e-kube:
	./test/kube/run.sh

## demo: the driver against the built-in simulated RDS through the real CSI API (root; a
## loop device stands in for NVMe/TCP, so the driver is built with the loopnvme tag)
demo:
	@command -v mkfs.ext4 >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends e2fsprogs; }
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace,loopnvme -ldflags "$(LDFLAGS)" -o bin/rds-csi-loop .
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/rds-sim ./cmd/rds-sim
	$(GO) run ./test/demo --rds-csi bin/rds-csi-loop --rds-sim bin/rds-sim

## bench: the footprint-and-speed report (one table; JSON in bench/out/)
bench:
	$(GO) run ./test/bench

## bench-vm: the three real-kernel figures of that report, in the test VM
bench-vm:
	$(GO) run ./test/bench -vm

image:
	./test/image/build-image.sh

clean:
	rm -rf bin bench/out
