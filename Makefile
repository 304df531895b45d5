# Tern — targets a newcomer can guess. Everything here works on a machine with
# only the Rust toolchain; anything else is installed on demand.

CARGO ?= cargo
DATA_DIR ?= ./data
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: all build release run cluster test test-unit verify fmt fmt-check clippy doc bench bench-compare bench-cluster fuzz fuzz-tools nats-server clean

all: build

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release -p tern-server -p tern-cli

## run: one node on 4222 (clients) and 8222 (monitoring), data in ./data
run: release
	mkdir -p $(DATA_DIR)
	./target/release/tern-server -p 4222 -m 8222 -js -sd $(DATA_DIR)

## cluster: three nodes on this machine (4222-4224, 6222-6224, 8222-8224) until Ctrl-C
cluster: release
	./scripts/local-cluster.sh ./target/release/tern-server

## test: the whole suite (unit, property, wire and client tests against real servers)
# The differential tests (tests/tests/differential.rs) run against the
# nats-server installed here; they must not skip.
test: build nats-server
ifeq ($(NEXTEST),yes)
	REQUIRE_NATS_SERVER=1 $(CARGO) nextest run --workspace --no-fail-fast
else
	REQUIRE_NATS_SERVER=1 $(CARGO) test --workspace --no-fail-fast
endif

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## verify: format, lint, docs and tests in one go
verify: fmt-check clippy doc test

## fuzz: the cargo-fuzz targets (parser, connect) for FUZZ_SECONDS each; installs g++ (for libFuzzer), nightly and cargo-fuzz if missing
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = parser connect
fuzz: fuzz-tools
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t && \
		cargo +nightly fuzz run -O $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 || exit 1; \
	done

fuzz-tools:
	@command -v c++ >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq g++)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

## nats-server: Debian's nats-server, the reference for bench-compare
nats-server:
	@command -v nats-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq nats-server)

## bench: Tern alone, every scenario, server pinned to core 0 and client to core 1
bench: release
	@port=$$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo 14222); \
	taskset -c 0 ./target/release/tern-server -a 127.0.0.1 -p $$port 2>/dev/null & pid=$$!; \
	sleep 1; taskset -c 1 ./target/release/tern bench run --url nats://127.0.0.1:$$port --server-pid $$pid; \
	rc=$$?; kill $$pid; exit $$rc

## bench-compare: Tern against Debian's nats-server, same client, same machine, alternating rounds
bench-compare: release nats-server
	./target/release/tern bench compare --tern-bin ./target/release/tern-server \
		--nats-bin $$(command -v nats-server) --rounds 3 --out bench-results.md

## bench-cluster: three-node Tern cluster vs three-node nats-server cluster, same client
bench-cluster: release nats-server
	./target/release/tern bench compare --tern-bin ./target/release/tern-server \
		--nats-bin $$(command -v nats-server) --cluster 3 --rounds 3 \
		--scenarios cluster-pubsub,cluster-fanout --out bench-cluster-results.md

clean:
	$(CARGO) clean
