# tocsin: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
export TOCSIN_NATS_SERVER ?= $(CURDIR)/.tools/venv/bin/nats-server

.PHONY: run test tools test-tools check fmt clippy unit bench bench-smoke clean

## install what is missing, build, start nats-server and every service (data in ./data)
run: tools
	cargo run -p tocsin -- up

## install test dependencies, then fmt check, clippy -D warnings, every test, and the Helm chart check
test: test-tools
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test --workspace
	helm/check.sh

## what running tocsin needs (nats-server, python for it)
tools:
	@tools/setup.sh

## ... and the real servers and clients the tests run (Prosody, Kannel, Dovecot, dnsmasq, swaks)
test-tools:
	@tools/setup.sh --test

fmt:
	cargo fmt --all

## the benchmark: publish → router → history against a raw JetStream baseline
bench: tools
	cargo run --release -p tocsin -- bench

bench-smoke: tools
	cargo run -p tocsin -- bench --notifications 2000 --users 100

clean:
	rm -rf target .tools
