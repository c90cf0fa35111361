# fusefs: make demo | make test | make install | make check | make bench
PYTHON ?= python3
VENV := .venv
DVC_VENV := .venv-dvc
BIN := $(VENV)/bin
export FUSEFS_DVC := $(abspath $(DVC_VENV)/bin/dvc)

.PHONY: install dev demo test check bench clean system-deps

system-deps:
	@if ! pkg-config --exists fuse3 2>/dev/null || ! command -v fusermount3 >/dev/null; then \
		echo "installing libfuse3-dev fuse3 (Debian)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libfuse3-dev fuse3 pkg-config gcc; \
	fi

$(BIN)/fusefs: pyproject.toml requirements/constraints.txt | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements/constraints.txt -e .
	@touch $@

$(BIN)/pytest: $(BIN)/fusefs
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[test]'
	@touch $@

$(DVC_VENV)/bin/dvc: requirements/dvc.txt
	$(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install -q -r requirements/dvc.txt
	@touch $@

install: $(BIN)/fusefs

dev: $(BIN)/pytest $(DVC_VENV)/bin/dvc

demo: install $(DVC_VENV)/bin/dvc
	$(BIN)/python scripts/demo.py

test: dev
	$(BIN)/pytest -q tests

check: dev
	$(BIN)/ruff check fusefs tests scripts
	$(BIN)/ruff format --check fusefs tests scripts
	$(BIN)/mypy fusefs
	$(BIN)/pytest -q tests

bench: dev
	$(BIN)/python scripts/bench_read.py
	$(BIN)/python scripts/bench_remote.py
	$(BIN)/python scripts/bench_write.py

clean:
	rm -rf $(VENV) $(DVC_VENV) build *.egg-info
