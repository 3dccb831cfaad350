# Two entry points: `make demo` and `make test`. Each creates .venv and installs what it
# needs on its own, so both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT := demo-output

.PHONY: demo test test-fast lint bench clean

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
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/augment_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) ray_results mlflow.db
