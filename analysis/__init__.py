"""Sensitivity analysis of tracked runs: tables, importance, plots and the HTML report.

Reads MLflow through ``tracking`` only and never imports torch or Ray, so it runs on any
machine that can reach the tracking store, and on any experiment whose runs have params
and the chosen metric.

The modules, in the order the analysis of one method uses them: ``runs`` (MLflow ->
tables), ``scales`` (search scales and their grids), ``budgets``, ``noise``
(replicates), ``surrogate`` and ``importance`` (importance, its interval and null,
marginal responses), ``response`` (their tables), ``failures``, ``summary``, ``plots``;
``method`` runs them for one method, ``comparison`` compares methods, ``report`` and
``html`` write the tables and the page.

May import: ``tracking``, pandas, NumPy, SciPy, matplotlib, PyYAML. Never ``study``,
``trainables``, torch or Ray.
"""
