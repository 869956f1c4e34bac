# The two commands of the README: `make demo` and `make test`. Both create .venv on first use,
# install the CPU torch wheel first (so pip never pulls a multi-GB CUDA build), then fullchain.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_OUT ?= demo_out

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fullchain demo --out $(DEMO_OUT)

test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) || \
		echo "chromium not installed: the web chat test will be skipped"
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python bench/check_size.py

bench: $(STAMP)
	$(BIN)/python bench/bench_gemm.py
	$(BIN)/python bench/bench_model.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_kv_pool.py
	$(BIN)/python bench/bench_kernels.py
	$(BIN)/python bench/bench_dedup.py --docs 20000 --datatrove-docs 5000
	$(BIN)/python bench/bench_data.py --docs 5000

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
