"""Sensitivity analysis of tracked runs: tables, importance, plots and the HTML report.

Reads MLflow only and never imports torch, so it runs on any machine that can reach the
tracking store, and on any experiment whose runs have params and the chosen metric.
"""
