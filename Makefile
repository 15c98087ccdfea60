# tocsin: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
export TOCSIN_NATS_SERVER ?= $(CURDIR)/.tools/venv/bin/nats-server

.PHONY: run test tools test-tools check fmt clippy unit bench bench-smoke fuzz faults-long screenshots clean

## install what is missing, build, start nats-server and every service (data in ./data)
run: tools
	cargo run -p tocsin -- up

## install test dependencies, then fmt check, clippy -D warnings, every test, and the Helm chart check
## (a one-off build: without incremental caches, which would add GBs to a fresh machine's disk;
## the chart check uses the tocsin binary the tests built)
test: export CARGO_INCREMENTAL = 0
test: test-tools
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --workspace
	TOCSIN_BIN=target/debug/tocsin helm/check.sh

## what running tocsin needs (nats-server, python for it)
tools:
	@tools/setup.sh

## ... and the real servers and clients the tests run (Prosody, Kannel, Dovecot, dnsmasq, swaks)
test-tools:
	@tools/setup.sh --test

fmt:
	cargo fmt --all

## every benchmark in one table, each figure beside a baseline from the same run (~7 min;
## the memory part runs tocsin-router as its own process, so build it too)
bench: tools
	cargo build --release -p tocsin-bench -p tocsin-router
	./target/release/tocsin-bench all

## the same with small sizes (about a minute; `make test` runs it too)
bench-smoke: tools
	cargo build --release -p tocsin-bench -p tocsin-router
	./target/release/tocsin-bench all --short

## fuzz every target for FUZZ_SECS seconds each (cargo-fuzz on the stable toolchain; docs/testing.md)
FUZZ_SECS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
	cd fuzz && for t in feed mail filter policy text; do \
	  mkdir -p corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECS) -rss_limit_mb=2048 -max_len=262144 || exit 1; \
	done

## the fault suite's long version: ten times the notifications, three rounds of kills
faults-long: test-tools
	TOCSIN_FAULTS_LONG=1 cargo test -p tocsin-tests --test e2e faults:: -- --nocapture

## the web app's screenshots in docs/screenshots (desktop and 360 px), from its browser tests
screenshots: test-tools
	TOCSIN_SCREENSHOTS=docs/screenshots PATH="$(CURDIR)/.tools/venv/bin:$$PATH" cargo test -p tocsin-tests --test e2e web::

clean:
	rm -rf target .tools
