# The README's two commands are `make demo` and `make test`; run them as root.
GO       ?= go
BIN      := bin
GOFLAGS  ?=
# Kernel tests run in network namespaces they create; two cores are plenty
# for two packages at a time.
TESTFLAGS ?= -count=1 -timeout 25m -p 2

.PHONY: all build test unit golden demo bench deps vet clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...

# The whole suite: unit, golden and root kernel tests. Installs the Debian
# packages the tests need when they are missing.
test: deps vet
	$(GO) test $(TESTFLAGS) ./...

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

# Benchmarks, as root, one package at a time (they share two cores): CNI ADD
# and DEL latency of terway against the reference chain ptp + host-local +
# bandwidth (built once by hack/cni-plugins.sh into a cache outside the
# repository), then the engine and render benchmarks.
BENCHTIME ?= 3x
bench: deps
	plugins=$$(hack/cni-plugins.sh) && TERWAY_CNI_PLUGINS=$$plugins \
	  $(GO) test -count=1 -timeout 30m -run '^$$' -bench BenchmarkCNIAddDel -benchtime 1x ./agent/
	$(GO) test -count=1 -p 1 -run '^$$' -bench . -benchtime $(BENCHTIME) ./apply/engine/ ./render/

deps:
	hack/install-deps.sh

clean:
	rm -rf $(BIN)
