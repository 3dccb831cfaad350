"""Orchestration: config validation, Ray and Optuna wiring, MLflow, the CLI. Never touches
tensors: it hands datasets and settings to ``trainables`` and reads plain results back."""
