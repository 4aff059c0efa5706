# RAUTA build, test, demo and bench. Every target that needs system packages
# installs the missing ones first (Debian/Ubuntu, apt), so a fresh machine
# needs nothing but `sudo make demo` or `sudo make test`.

GO        ?= go
BIN       := bin
GOFLAGS   ?=
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# Directories holding a BPF program and its bpf2go output.
BPF_DIRS  := xdp tc tools/impair
# Packages each target needs; `deps` installs all of them.
PKGS_BUILD := ca-certificates git
PKGS_GEN   := clang-19 llvm-19 libbpf-dev linux-libc-dev
PKGS_NET   := iproute2 ethtool curl
PKGS_TEST  := $(PKGS_BUILD) $(PKGS_GEN) $(PKGS_NET) bpftool wrk
PKGS_DEMO  := $(PKGS_BUILD) $(PKGS_NET)
PKGS_BENCH := $(PKGS_BUILD) $(PKGS_NET) wrk nginx-light haproxy

# A Debian go older than go.mod's fetches the right toolchain by itself.
export GOTOOLCHAIN ?= auto
# apt's Go lives in /usr/lib/go; an installed toolchain may be in /usr/local/go.
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build generate check-generated test test-unit demo bench lint deps deps-test deps-demo deps-bench clean

all: build

define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# Go itself: any Go >= 1.21 fetches the toolchain go.mod asks for. Debian 13's
# golang-go qualifies; Debian 12's (1.19) does not, so say so plainly.
define ensure_go
	@command -v $(GO) >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go; }
	@$(GO) env GOTOOLCHAIN >/dev/null 2>&1 || { echo "Go >= 1.21 is required (found $$($(GO) version)); install it from your distribution's backports or go.dev"; exit 1; }
endef

deps:
	$(call install_missing,$(sort $(PKGS_TEST) $(PKGS_DEMO) $(PKGS_BENCH)))
	$(ensure_go)
deps-test:
	$(call install_missing,$(PKGS_TEST))
	$(ensure_go)
deps-demo:
	$(call install_missing,$(PKGS_DEMO))
	$(ensure_go)
deps-bench:
	$(call install_missing,$(PKGS_BENCH))
	$(ensure_go)

build:
	$(GO) build $(GOFLAGS) -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/... ./tools/cmd/...

# Rebuilds the BPF objects and their Go bindings (committed, so `go build`
# needs no clang).
generate:
	$(GO) generate $(addprefix ./,$(addsuffix /...,$(BPF_DIRS)))

# The committed objects must be what the committed sources compile to:
# compile a copy of the tree and compare byte for byte.
check-generated:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	cp -r --parents go.mod go.sum bpf $(BPF_DIRS) $$tmp/ && \
	(cd $$tmp && $(GO) generate $(addprefix ./,$(addsuffix /...,$(BPF_DIRS)))) && \
	for d in $(BPF_DIRS); do \
	  for f in $$d/*_bpfel.o $$d/*_bpfel.go; do \
	    cmp -s $$f $$tmp/$$f || { echo "$$f does not match its source: run 'make generate' and commit"; exit 1; }; \
	  done; \
	done; echo "generated BPF objects match their sources"

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...

# All tests. Most need root (BPF, network namespaces); run with sudo.
test: deps-test lint check-generated
	$(GO) test -count=1 -timeout 45m ./...

test-unit:
	$(GO) test -count=1 ./maglev/... ./config/... ./tools/backend/...

demo: deps-demo build
	$(BIN)/rauta demo $(DEMO_ARGS)

bench: deps-bench build
	$(GO) run ./bench/cmd/rauta-bench -out bench/results $(BENCH_ARGS)

clean:
	rm -rf $(BIN)
