# `make run` and `make test` install everything they need on first use:
# host packages + kernel-header links + tracefs (scripts/setup-host.sh, needs
# root), the venv, generated protobuf code, and the link to Debian's bcc.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PPROF_PB := telegen/formats/profile_pb2.py
BCC_LINK := $(VENV)/.bcc-linked
ARGS   ?=
SETUP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install host lint bench clean image

run: install
	$(VENV)/bin/telegen run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

install: host $(STAMP) $(PPROF_PB) $(BCC_LINK)

host:
	@bash scripts/setup-host.sh $(SETUP_ARGS)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(PPROF_PB): telegen/formats/profile.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -I telegen/formats --python_out=telegen/formats \
	    --pyi_out=telegen/formats telegen/formats/profile.proto

# bcc is pure Python over Debian's libbcc.so: expose only that package to the venv.
$(BCC_LINK): $(STAMP)
	@if [ -d /usr/lib/python3/dist-packages/bcc ]; then \
	  ln -sfn /usr/lib/python3/dist-packages/bcc \
	    "$$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/bcc"; \
	  touch $@; \
	else echo "WARNING: Debian's python3-bpfcc is not installed: the ebpf receiver will not load"; fi

lint: install
	$(VENV)/bin/ruff check telegen tests bench
	$(VENV)/bin/mypy telegen

# The container image, built with podman from the local Debian base
# (scripts/container-image.sh: no registry needed). IMAGE=name:tag
IMAGE ?= telegen:latest
image: host
	bash scripts/container-image.sh $(IMAGE)

bench: install
	$(PY) -m bench.overhead

clean:
	rm -rf $(VENV) $(PPROF_PB) telegen/formats/profile_pb2.pyi
