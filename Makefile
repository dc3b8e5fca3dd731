# The README's two commands are `make demo` and `make test`; run them as root.
GO       ?= go
BIN      := bin
GOFLAGS  ?=
# Kernel tests run in network namespaces they create; two cores are plenty
# for two packages at a time.
TESTFLAGS ?= -count=1 -timeout 25m -p 2

.PHONY: all build test unit golden demo bench deps vet clean k8s-assets fuzz image manifests \
	node-assets node-up node-down e2e-upstream

all: build

# Static, as the image builds them (hack/mkimage): what runs in production
# and what the benchmarks measure. The CNI binary, terway, is a C forwarder
# (cni/forward): a dynamic build would load the dynamic linker and libc on
# every exec, and a Go program's start costs each ADD about 1 ms of CPU.
build:
	hack/install-deps.sh build
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...
	$(GO) run ./hack/forwarder -o $(BIN)/terway

# The whole suite: unit, golden and root kernel tests. Installs the Debian
# packages the tests need when they are missing. TERWAY_CHECK_KEPT_SETS=1
# has every CNI request's nftables plan that used the last one's memo
# planned again without it, and fails it if the two differ
# (apply/nft/keptsets.go).
test: deps vet k8s-assets node-assets
	TERWAY_CHECK_KEPT_SETS=1 $(GO) test $(TESTFLAGS) ./...
	$(MAKE) fuzz

# Each fuzz target for FUZZTIME (go test -fuzz takes one package and one
# target at a time). `go test` above already ran every target over its seeds
# and testdata/fuzz corpus; this looks for new inputs: 8 targets x 10s, plus
# their instrumented builds (cached after the first run). New coverage is
# not minimised (FUZZMINIMIZE=1x): in a 10 s run minimising would take most
# of the time. A failure writes the input to <pkg>/testdata/fuzz/<target>/:
# fix the bug and commit the file, which every `go test` then replays.
# hack/fuzz.sh runs a target once more when go1.26's coordinator reports
# its own deadline as a failure with no failing input (golang/go#75804).
FUZZTIME ?= 10s
FUZZMINIMIZE ?= 1x
FUZZ_TARGETS := \
	./render/:FuzzBandwidth \
	./render/:FuzzPolicyCompile \
	./spec/:FuzzParse \
	./cni/plugin/:FuzzBuildRequest \
	./cni/wire/:FuzzParseCNIArgs \
	./cni/wire/:FuzzReadAnswer \
	./cloud/emulator/:FuzzServeAPI \
	./spec/:FuzzNodePodCIDR
fuzz:
	GO=$(GO) hack/fuzz.sh $(FUZZTIME) $(FUZZMINIMIZE) $(FUZZ_TARGETS)

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Compare every golden case; `make golden UPDATE=1` rewrites them.
golden: build
ifeq ($(UPDATE),1)
	$(BIN)/terwayctl golden update golden
else
	$(BIN)/terwayctl golden diff golden
endif

demo: deps build
	hack/demo.sh

# Benchmarks, as root, one at a time (they share two cores): first the
# whole-system table of `terwayctl bench` (pod setup against the reference
# chain ptp + host-local + bandwidth, built once by hack/cni-plugins.sh into
# a cache outside the repository; convergence, resync, policy scale,
# bandwidth accuracy and RSS on simulated nodes), which BENCHMARKS.md keeps;
# then the go test benchmarks: CNI ADD/DEL, the engine and render.
BENCHTIME ?= 3x
bench: deps build
	plugins=$$(hack/cni-plugins.sh) && $(BIN)/terwayctl bench --cni-plugins $$plugins
	plugins=$$(hack/cni-plugins.sh) && TERWAY_CNI_PLUGINS=$$plugins \
	  $(GO) test -count=1 -timeout 30m -run '^$$' -bench BenchmarkCNIAddDel -benchtime 1x ./agent/
	$(GO) test -count=1 -p 1 -run '^$$' -bench . -benchtime $(BENCHTIME) ./apply/engine/ ./render/

# kube-apiserver, etcd and kubectl for the tests against a real API server
# (internal/kubetest, e2e/), built from the Go module proxy into a cache
# outside the repository: 11-20 min cold (more on a busy machine), instant
# when cached. Built here so that a cold build does not count against go
# test's timeout; the tests would build them too rather than skip.
k8s-assets:
	hack/k8s-assets.sh >/dev/null

# A real node's binaries (kubelet, kcm, scheduler, kube-proxy, agnhost,
# e2e.test, containerd, runc, crictl), cached by version outside the
# repository; cold about 25 minutes, warm nothing.
node-assets: k8s-assets
	hack/node-assets.sh >/dev/null

deps:
	hack/install-deps.sh

# The agent's image, built here without a daemon or a registry
# (hack/mkimage): static terwayd, terway and terwayctl plus the CA bundle,
# no shell, one archive that `ctr -n k8s.io images import`, `docker load`
# and `skopeo copy docker-archive:...` all read. Every timestamp in it is
# the commit's time, so two builds of one commit give the same digest.
#   make image IMAGE=registry.example.com/terway-reconciler:v1
#   make manifests IMAGE=registry.example.com/terway-reconciler:v1
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE ?= terway-reconciler:$(VERSION)
IMAGE_ARCHIVE ?= $(BIN)/terway-reconciler.tar
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
image: deps
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/mkimage -name '$(IMAGE)' -o $(IMAGE_ARCHIVE) \
	  -bin-dir $(BIN)/image -version '$(VERSION)' -revision '$(REVISION)'

# Sets IMAGE as the image of every container in the manifests (the only
# `image:` lines they have).
MANIFESTS ?= manifests/terway.yml manifests/terway-multiip.yml
manifests:
	@case '$(IMAGE)' in *[!A-Za-z0-9._:/@-]*|'') echo "IMAGE '$(IMAGE)': not an image name" >&2; exit 1;; esac
	sed -i -E 's#^([[:space:]]+image:[[:space:]]*).*$$#\1$(IMAGE)#' $(MANIFESTS)

# A real single-node cluster (internal/realnode) inside a network and a
# private mount namespace of its own, our agent on it as the DaemonSet of
# manifests/terway.yml with IMAGE; node-down removes every process, mount,
# cgroup and namespace it made. NODE_MODE=eni-multi-ip applies
# manifests/terway-multiip.yml instead, with the cloud emulator running
# inside the node (its ENIs appear there as links) and the manifest's
# cloud.yaml pointed at it.
# NODES=2 adds a second node (NODE-2, its own namespaces, containerd,
# kubelet and kube-proxy) joined to the first's API server; a vpc namespace
# rc-NODE routes each node's podCIDR to it. node-down removes every node.
NODE ?= realnode
NODES ?= 1
NODE_MODE ?= vpc
ifeq ($(NODE_MODE),eni-multi-ip)
NODE_UP_FLAGS := -manifest manifests/terway-multiip.yml -emulator $(BIN)/terwayctl
else
NODE_UP_FLAGS := -manifest manifests/terway.yml
endif
# CNI=ptp: the reference ptp + host-local + bandwidth chain (hack/cni-plugins.sh)
# instead of our DaemonSet, the baseline of CONFORMANCE.md's pod start figures.
CNI ?= terway
ifeq ($(CNI),ptp)
NODE_UP_FLAGS += -cni ptp -cni-plugins "$$(hack/cni-plugins.sh)"
endif
node-up: node-assets image
	$(GO) build $(GOFLAGS) -o $(BIN)/realnode ./hack/realnode
	$(GO) build $(GOFLAGS) -o $(BIN)/terwayctl ./cmd/terwayctl
	$(BIN)/realnode up -name $(NODE) -image '$(IMAGE)' -image-archive $(IMAGE_ARCHIVE) -nodes $(NODES) $(NODE_UP_FLAGS)

node-down:
	$(GO) build $(GOFLAGS) -o $(BIN)/realnode ./hack/realnode
	$(BIN)/realnode down -name $(NODE)

# Kubernetes' own [sig-network] Netpol and Networking Granular Checks: Pods
# specs (TCP and UDP; SCTP connectivity needs a
# kernel module this machine lacks) on the real node, with e2e.test
# v1.37.2; the junit report and log go to $(E2E_REPORT). See CONFORMANCE.md.
E2E_FOCUS ?= \[sig-network\] (Netpol|Networking Granular Checks: Pods)
E2E_SKIP ?= \[Feature:SCTPConnectivity\]
E2E_REPORT ?= $(BIN)/e2e-upstream
e2e-upstream: node-up
	$(BIN)/realnode e2e -name $(NODE) -focus '$(E2E_FOCUS)' -skip '$(E2E_SKIP)' -report-dir $(E2E_REPORT); \
	  rc=$$?; $(BIN)/realnode down -name $(NODE); exit $$rc

clean:
	rm -rf $(BIN)
