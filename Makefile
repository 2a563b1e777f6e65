# Outpost: one entry point for people and CI.
#   make up      create the environment from nothing and run the appliance (embedded defaults)
#   make test    install test needs (official clients included) and run every test
#   make bench   load benchmarks (figures go to docs/benchmarks.md)
#   make lint    ruff + mypy
#   make image   the bootable appliance disk image (image/build/outpost.img; root, no network in it)
#   make image-test  boot it under qemu, update it A/B, watch a fallback (docs/image.md; ~12 min)
#   make update-bundle KEY=signer.key APPLIANCE=id SEQ=n   a signed software update (image/build/update/)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
CLIENTS := .cache/clients/.complete
SHARED ?= ../shared

.PHONY: up test test-fast interop clients lint bench clean help image image-test image-deps qemu-deps update-bundle

help:
	@sed -n '2,9p' Makefile

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
SYSDEP_CMDS := nft ip curl sysctl mcopy mkfs.vfat mkfs.ext4 losetup blkid tmux
sysdeps:
	@if [ "$$(id -u)" = 0 ] && ! { for c in $(SYSDEP_CMDS); do command -v $$c >/dev/null || exit 1; done; }; then \
	  echo "installing iproute2, nftables, curl, procps, mtools, dosfstools, e2fsprogs, util-linux, tmux"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables curl procps mtools dosfstools e2fsprogs util-linux tmux >/dev/null; \
	fi

$(CLIENTS): $(STAMP) tests/interop/fetch_clients.py
	$(PY) tests/interop/fetch_clients.py --cache .cache/clients
	touch $(CLIENTS)

clients: $(CLIENTS)

# Image build tools (root machines only; the image tests skip elsewhere).
image-deps:
	@if [ "$$(id -u)" = 0 ] && { ! command -v mmdebstrap >/dev/null || ! command -v mkfs.erofs >/dev/null || ! command -v mkfs.vfat >/dev/null || ! command -v mcopy >/dev/null || ! command -v sfdisk >/dev/null || ! command -v systemd-analyze >/dev/null || ! command -v nft >/dev/null; }; then \
	  echo "installing mmdebstrap, erofs-utils, dosfstools, mtools, fdisk, systemd, nftables"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap erofs-utils dosfstools mtools fdisk e2fsprogs systemd nftables >/dev/null; \
	fi

qemu-deps:
	@if [ "$$(id -u)" = 0 ] && { ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null || [ ! -e /usr/share/OVMF/OVMF_CODE_4M.fd ]; }; then \
	  echo "installing qemu-system-x86, qemu-utils, ovmf"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils ovmf >/dev/null; \
	fi

image: $(STAMP) image-deps
	nice -n 10 $(PY) image/build.py image

# KEY may name several keys (M-of-N): KEY="a.key b.key". No key lives in the repository.
update-bundle: $(STAMP) image-deps
	@test -n "$(KEY)" -a -n "$(APPLIANCE)" -a -n "$(SEQ)" || { echo "usage: make update-bundle KEY=signer.key APPLIANCE=appliance-id SEQ=n [VERSION=unix-time]"; exit 2; }
	nice -n 10 $(PY) image/build.py update $(foreach k,$(KEY),--key $(k)) --appliance $(APPLIANCE) --seq $(SEQ) $(if $(VERSION),--version $(VERSION))

image-test: image qemu-deps
	OUTPOST_IMAGE_BOOT=1 $(VENV)/bin/pytest -q -ra tests/image

test: $(STAMP) sysdeps image-deps $(CLIENTS)
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
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache image/build
