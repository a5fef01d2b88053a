# GDSD-RL. `make run` and `make test` are all a newcomer types; both run setup first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel by default; a GPU user sets e.g. TORCH_SPEC="torch==2.13.0 --index-url <their cuda index>".
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/countdown_quick.yaml
ARGS ?=

.PHONY: setup run test test-quick lint bench gpu-check-wheels clean

# setup = what the job needs (.installed-run: torch, the package, bubblewrap) + the test and lint tools (.installed);
# `make run` needs only the first, so a newcomer's first run does not wait for pytest, mypy and wandb
setup: $(VENV)/.installed

$(VENV)/.installed-run: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e .
	@command -v bwrap >/dev/null || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || echo "note: bubblewrap not installed; the code sandbox will refuse to run programs"; }
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/python -m deploy.job --config $(CONFIG) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

# ruff (pyflakes-level checks, line length) and mypy on the service packages (pyproject.toml [tool.ruff],
# [tool.mypy]); .ci/run runs it before the tests. The formatter is configured but not enforced yet.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# the inner loop: everything but the tests marked slow (whole jobs, restarts, the weight bus); `make test` runs all
test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.rollout

# pydantic and its dependencies as CPython 3.12 manylinux wheels in .whl/, at the versions this venv resolved: the GPU
# machine has torch, transformers, pyarrow, numpy, safetensors, tokenizers and pyyaml but no pydantic, and reaches no
# index (README, "LoRA and the GPU check")
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions

gpu-check-wheels: setup
	rm -rf .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/python -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in "$(GPU_WHEELS)".split()))')
	@ls .whl

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .whl
