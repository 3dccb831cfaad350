"""Sensitivity analysis of tracked runs: tables, importance, plots and the HTML report.

Reads MLflow through ``tracking`` only and never imports torch or Ray, so it runs on any
machine that can reach the tracking store, and on any experiment whose runs have params
and the chosen metric.

May import: ``tracking``, pandas, NumPy, SciPy, Optuna (its importance evaluators),
matplotlib. Never ``study``, ``trainables``, torch or Ray.
"""
