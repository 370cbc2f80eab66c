# Two commands do all the set-up: `make demo` and `make test`. Nothing here needs root.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
TEST_PLUGINS := build/test-plugins
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-plugins benchmarks toy-world clean

# torch==2.13.0 first: an unpinned torch (or any range it does not satisfy) resolves to a multi-GB CUDA build.
# DS_BUILD_OPS=0: deepspeed (train extra) installs without compiling its ops; the one a CPU run needs is compiled
# on first use and kept in build/torch-extensions by the tests (TORCH_EXTENSIONS_DIR).
$(VENV)/.installed: pyproject.toml registry/pyproject.toml constraints.txt $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -c constraints.txt -e registry -e '.[test,serve,official,train,ann,ray,eval]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/nextgpt demo --out outputs/demo --overwrite

# Rebuild the toy world from scratch (about an hour on 2 cores): a progress bar per phase, logs in build/toy-world/logs.
# The modalities of the shipped world are named (other installed parts, e.g. thermal and imu, join with -m).
# `nextgpt toy install build/toy-world` then makes it the built-in `toy` composition.
toy-world: install
	$(BIN)/nextgpt toy build --out build/toy-world --overwrite -m image -m video -m audio -m depth

# The fake plugin is installed as a real distribution into build/test-plugins (not into .venv), so its entry
# point is found by the tests (PYTHONPATH below) and never by `nextgpt demo`.
test-plugins: install
	rm -rf $(TEST_PLUGINS)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --target $(TEST_PLUGINS) ./tests/fake_plugin

test: test-plugins
	$(BIN)/ruff check nextgpt_core registry plugins tests benchmarks
	PYTHONPATH=$(CURDIR)/$(TEST_PLUGINS) $(BIN)/python -m pytest $(PYTEST_ARGS)

benchmarks: test-plugins
	PYTHONPATH=$(CURDIR)/$(TEST_PLUGINS) $(BIN)/python benchmarks/cli_startup.py
	PYTHONPATH=$(CURDIR)/$(TEST_PLUGINS) $(BIN)/python benchmarks/request_overhead.py
	$(BIN)/python benchmarks/any_to_any_request.py
	$(BIN)/python benchmarks/training_targets.py
	$(BIN)/python benchmarks/training_memory.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/serving_ray.py
	$(BIN)/python benchmarks/retrieval.py

clean:
	rm -rf $(VENV) build outputs .pytest_cache
