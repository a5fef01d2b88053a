# GDSD-RL. `make run` and `make test` are all a newcomer types; both run setup first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel by default; a GPU user sets e.g. TORCH_SPEC="torch==2.13.0 --index-url <their cuda index>".
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/sudoku_quick.yaml
ARGS ?=

.PHONY: setup run test test-quick bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	@command -v bwrap >/dev/null || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || echo "note: bubblewrap not installed; the code sandbox will refuse to run programs"; }
	touch $@

run: setup
	$(BIN)/python -m deploy.job --config $(CONFIG) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

# the inner loop: everything but the tests marked slow (whole jobs, restarts, the weight bus); `make test` runs all
test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.rollout

clean:
	rm -rf $(VENV) runs .pytest_cache
