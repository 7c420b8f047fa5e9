# The two commands a user needs: `make demo` and `make test`.
# Each creates .venv if missing and installs torch (TORCH_SPEC, overridable, e.g.
# `make test TORCH_SPEC="torch==2.13.0 --index-url ..."` for a CUDA build) and mfal.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Test files run side by side in this many processes (pytest-xdist); each keeps its
# module fixtures. Most end-to-end tests wait on workers and polls, so 2 fill 2 cores.
TEST_WORKERS ?= 2

BIN := $(VENV)/bin
STAMP := $(VENV)/.mfal-installed

.PHONY: demo test install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[local,test]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -ra -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The H + H2 campaign: shipped PBE committee, real pyqmc DMC labels, embedded database.
# DEMO_WORKERS rlaunch workers run a cycle's DMC labels side by side.
DEMO_WORKERS ?= 2

demo: $(STAMP)
	$(BIN)/mfal db start
	$(BIN)/mfal campaign run configs/h3_pyqmc.yaml --workers $(DEMO_WORKERS)
