# apt-ostree-factory — build, test, lint, benchmark.
GO      ?= go
BIN     := bin/apt-ostree-factory
# Packages with concurrency run again under the race detector.
RACE_PKGS := ./ostree/... ./apt/... ./builder/... ./diskimage/... ./delta/...

.PHONY: all build deps lint test unit race fuzz fuzz-smoke qemu-test bench clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/apt-ostree-factory

# Installs the oracle tools (ostree, gnupg, attr, e2fsprogs, ...) when missing.
deps:
	bash scripts/install-test-deps.sh

lint:
	@out="$$(find . \( -path ./.cache -o -path ./.git -o -path ./bin \) -prune -o -name '*.go' -print0 | xargs -0 gofmt -l)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The full suite: lint, every test (oracle tools required, never skipped;
# live-archive tests included), the race detector on concurrent packages,
# and short fuzzes of the GVariant decoder and of bsdiff.
test: deps lint unit race fuzz-smoke qemu-test

# AOF_NETWORK_TESTS=1 runs the tests against the live Debian archive that apt
# on this machine is configured with (solver vs mmdebstrap, real .debs, the
# default recipe built as root and as a subuid user); AOF_QEMU_TESTS=1 boots
# the built commit under QEMU (TCG when KVM does not answer).
unit:
	AOF_REQUIRE_TOOLS=1 AOF_NETWORK_TESTS=1 AOF_QEMU_TESTS=1 $(GO) test -count=1 -timeout 40m ./...

race:
	AOF_REQUIRE_TOOLS=1 $(GO) test -race -short -count=1 -timeout 20m $(RACE_PKGS)

# QEMU scenarios (qemu-tests/): the default recipe's image (v1, and v2 with
# a package added) booted with OVMF under TCG when KVM does not answer:
# boot, upgrade + 3-way /etc merge + rollback + staged upgrade, and a broken
# image that must fail. Console logs stay in $$TMPDIR/aof-qemu-logs.
qemu-test: deps
	AOF_REQUIRE_TOOLS=1 AOF_NETWORK_TESTS=1 AOF_QEMU_SCENARIOS=1 $(GO) test -count=1 -timeout 60m -v -run 'TestScenario' ./qemu-tests/

fuzz-smoke:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=15s ./ostree/gvariant
	$(GO) test -run='^$$' -fuzz=FuzzBsdiff -fuzztime=15s ./delta

# Longer fuzzing, for developers.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=5m ./ostree/gvariant
	$(GO) test -run='^$$' -fuzz=FuzzParseType -fuzztime=1m ./ostree/gvariant
	$(GO) test -run='^$$' -fuzz=FuzzBsdiff -fuzztime=5m ./delta

# Side-by-side benchmarks against the reference tools; prints ratios.
bench:
	bash scripts/bench-resolve.sh
	bash scripts/bench-commit.sh
	bash scripts/bench-build.sh
	bash scripts/bench-image.sh
	bash scripts/bench-delta.sh

clean:
	rm -rf bin
