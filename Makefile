# Outpost: one entry point for people and CI.
#   make up      create the environment from nothing and run the appliance (embedded defaults)
#   make test    install test needs (official clients included) and run every test
#   make bench   load benchmarks (figures go to docs/benchmarks.md)
#   make lint    ruff + mypy

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
CLIENTS := .cache/clients/.complete
SHARED ?= ../shared

.PHONY: up test test-fast interop clients lint bench clean help

help:
	@sed -n '2,6p' Makefile

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/outpost up

# Tools the tests need (root machines only; skipped elsewhere): network namespaces
# for the interop tests, and FAT/ext4 tools for the loop-backed USB media tests.
SYSDEP_CMDS := nft ip curl sysctl mcopy mkfs.vfat mkfs.ext4 losetup blkid
sysdeps:
	@if [ "$$(id -u)" = 0 ] && ! { for c in $(SYSDEP_CMDS); do command -v $$c >/dev/null || exit 1; done; }; then \
	  echo "installing iproute2, nftables, curl, procps, mtools, dosfstools, e2fsprogs, util-linux"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables curl procps mtools dosfstools e2fsprogs util-linux >/dev/null; \
	fi

$(CLIENTS): $(STAMP) tests/interop/fetch_clients.py
	$(PY) tests/interop/fetch_clients.py --cache .cache/clients
	touch $(CLIENTS)

clients: $(CLIENTS)

test: $(STAMP) sysdeps $(CLIENTS)
	OUTPOST_SHARED=$(SHARED) $(VENV)/bin/pytest -q -ra tests

test-fast: $(STAMP) sysdeps
	OUTPOST_SHARED=$(SHARED) $(VENV)/bin/pytest -q -ra tests --ignore=tests/interop

interop: $(STAMP) sysdeps $(CLIENTS)
	$(VENV)/bin/pytest -q -ra tests/interop

lint: $(STAMP)
	$(VENV)/bin/ruff check server appliance tui tests
	$(VENV)/bin/mypy server/outpost_server appliance/outpost_appliance

bench: $(STAMP)
	$(PY) -m outpost_server.bench

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
