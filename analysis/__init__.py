"""Sensitivity analysis of tracked runs: tables, importance, plots and the HTML report.

Reads MLflow mostly through ``tracking`` and never imports torch or Ray, so it runs on
any machine that can reach the tracking store, and on any experiment whose runs have
params and the chosen metric.

The modules, in the order the analysis of one method uses them: ``runs`` (MLflow ->
tables), ``scales`` (search scales and their grids), ``budgets``, ``noise``
(replicates), ``surrogate`` and ``importance`` (importance, its interval and null,
marginal responses), ``response`` (their tables), ``failures``, ``summary``, ``plots``;
``method`` runs them for one method, ``comparison`` compares methods, ``sweeps`` reads
paper-style sweeps, ``protocols`` the evaluation protocols, ``views`` and
``interactive`` add what a reader in a browser needs, ``report`` (``sslstudy analyze``)
and ``html`` write the tables and the page; ``errors`` holds the input error, apart so
the CLI can catch it without importing the rest.

May import: ``tracking``, MLflow (``runs`` and ``views`` call its client directly, for a
run search and a download of the study's resolved config), pandas, NumPy, SciPy,
matplotlib, Plotly (``interactive``), PyYAML. Never ``study``, ``trainables``, torch or
Ray.
"""
