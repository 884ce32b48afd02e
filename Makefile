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

.PHONY: all build test deps fmt-check vet lint unit e2e e2e-kube conformance demo bench bench-vm image push image-docker clean

all: build

## build: static, stripped bin/rds-csi and the simulator bin/rds-sim
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/rds-csi .
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/rds-sim ./cmd/rds-sim

## test: everything CI runs: prerequisites, formatting, vet, unit tests under -race, the
## real-kernel suites (VM) and the real-kubelet suite (deploy.yaml's pods)
test: deps fmt-check vet unit e2e e2e-kube

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

## e2e-kube: deploy.yaml's own pods, installed through the kustomization, on a real one-node
## Kubernetes (root; the first build of Kubernetes, the sidecars and their images takes
## ~11 min, stamped and reused; then a run ~5 min)
## It ends with the Kubernetes storage conformance subset (test/conformance/subset.focus).
e2e-kube:
	./test/kube/run.sh

## conformance: the same installation, then every External Storage test of the Kubernetes
## e2e suite (e2e.test, test/conformance; ~1 h on 2 cores)
conformance:
	E2E_CONFORMANCE=full ./test/kube/run.sh

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

## image: the multi-arch image without a container engine (cmd/rds-image): scratch + the static
## binary + the filesystem tools and their libraries from Debian packages of each architecture.
## Writes $(IMAGE_OUT)/oci (OCI layout, multi-arch index tagged $(VERSION)),
## $(IMAGE_OUT)/rds-csi-<arch>.tar (docker-archive: docker/podman load, ctr images import) and
## $(IMAGE_OUT)/image.json (digests, sizes, Debian packages). Same inputs, same digest.
REGISTRY     ?= ghcr.io/srvlab
IMAGE        ?= $(REGISTRY)/rds-csi
IMAGE_ARCHES ?= amd64 arm64
IMAGE_TAGS   ?= grpcnotrace
IMAGE_OUT    ?= bin/image
REVISION     ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
image:
	@for arch in $(IMAGE_ARCHES); do \
	  echo "go build rds-csi for linux/$$arch (tags $(IMAGE_TAGS))"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -tags $(IMAGE_TAGS) -ldflags "$(LDFLAGS)" -o bin/linux-$$arch/rds-csi . || exit 1; \
	done
	$(GO) run ./cmd/rds-image build -image $(IMAGE) -version $(VERSION) -revision $(REVISION) -out $(IMAGE_OUT) \
	  $(foreach arch,$(IMAGE_ARCHES),-binary $(arch)=bin/linux-$(arch)/rds-csi)

## push: build the image and push it to $(IMAGE):$(VERSION) (credentials in REGISTRY_USER and
## REGISTRY_PASSWORD), e.g. `make image push REGISTRY=ghcr.io/you`
push: image
	$(GO) run ./cmd/rds-image push -layout $(IMAGE_OUT)/oci -to $(IMAGE):$(VERSION) -digest-file $(IMAGE_OUT)/pushed-digest

## image-docker: the same image from the Dockerfile, with docker, podman or buildah
image-docker:
	IMAGE=$(IMAGE) VERSION=$(VERSION) REVISION=$(REVISION) ./test/image/build-image.sh

clean:
	rm -rf bin bench/out
