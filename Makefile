# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it
# needs on its own, so both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
DEMO_OUT := demo-output
BENCH_OUT := bench-output
# Flags for the whole suite, e.g. make bench BENCH_ARGS="--device cuda --only augment,step"
BENCH_ARGS ?=
# The suite runs in pytest-xdist workers (two by default, as many as CI's cores), a test
# file to a worker: a module's Ray instance or study is built once, on one worker.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --dist loadfile

.PHONY: demo test test-fast lint bench bench-gpu clean

# torch and torchvision come from the package index together (matching builds); the CUDA
# wheels run on CPU too. The stamp re-installs when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(BIN)/sslstudy search configs/demo.yaml
	$(BIN)/sslstudy analyze --experiment sslstudy-demo \
		--tracking-uri sqlite:///$(DEMO_OUT)/mlflow.db --out $(DEMO_OUT)/report
	@echo
	@echo "Report (open in a browser): $(DEMO_OUT)/report/report.html"
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///$(DEMO_OUT)/mlflow.db --port 5000"
	@echo "  then open the URL that analyze printed above (the experiment's runs view)"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PARALLEL)

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

# The benchmarks compare against lightly, which only they need (the `bench` extra).
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Everything a GPU machine should check, in one go: the CUDA tests (which skip without a
# GPU elsewhere), the benchmark suite on the GPU, vs-lightly compiled at batch 1024 (the
# README's GPU figure), and a tiny study of 8 trials packed four to a GPU through
# fractional gpus_per_worker.
bench-gpu: $(BENCH_STAMP)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
		'bench-gpu: torch sees no CUDA device')"
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
	$(BIN)/python -m pytest -rs -q tests/test_gpu_path.py tests/test_shared_resources.py
	$(BIN)/python -m benchmarks --device cuda
	$(BIN)/python -m benchmarks.vs_lightly --device cuda --compile --batch 1024
	rm -rf $(BENCH_OUT)
	$(BIN)/sslstudy search configs/gpu-fractional.yaml

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(BENCH_OUT) ray_results mlflow.db
