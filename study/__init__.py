"""Orchestration and the command line, the top layer.

- ``cli``: ``sslstudy`` (search, train, confirm, sweep, analyze, export, methods,
  tracking-server); imports each command's module only when that command runs.
- ``config``: the YAML schema (pydantic), one-line errors; ``errors``: the input error,
  apart so the CLI can catch it without importing the schema.
- ``settings``: a config in the terms of the layers below (loop and trial settings,
  where the study lives).
- ``checks``: every input check that runs before anything is written or started;
  ``paths``: those of the places a command writes to (no torch, for ``tracking-server``).
- ``cluster``: the Ray session, what a trial asks of the cluster, shared storage;
  ``logs``: how a process logs (the command, a study's fit on a Ray Client cluster).
- ``launch``: what ``search``, ``confirm`` and ``sweep`` share (the checks before a
  start, the study directory's state for ``--resume``, the launch itself).
- ``search``: ``sslstudy search`` (checks, then the study); ``tuner``: Ray Tune,
  an Optuna sampler (TPE, QMC or random) and ASHA, every method's search in one Tuner
  (``per_method``: the searcher and scheduler that keep the methods' searches apart) or
  one search across methods.
- ``confirm`` and ``sweep``: ``sslstudy confirm`` and ``sslstudy sweep``, fixed
  configurations with fresh seeds run through ``grid`` (Ray Tune without a searcher or
  early stopping).
- ``train``: ``sslstudy train`` (one configuration, no Ray, no Optuna).
- ``export``: ``sslstudy export`` (the best encoder to the Model Registry, or the study
  for DeepCAVE); ``catalogue``: ``sslstudy methods``.

May import: every other package of the project (``trainables``, ``tracking``,
``search_spaces``; ``analysis`` from the CLI only), Ray, Optuna, MLflow, torch (only to
count the GPUs of the local machine), pydantic (the config schema), PyYAML (configs, ``--param``
values, ``sweep --around`` files), tqdm (the progress bar of ``train``). Nothing imports
``study``.
"""
