"""Orchestration and the command line, the top layer.

- ``cli``: ``sslstudy`` (search, train, analyze, tracking-server); imports each
  command's module only when that command runs.
- ``config``: the YAML schema (pydantic), one-line errors.
- ``settings``: a config in the terms of the layers below (loop and trial settings,
  where the study lives).
- ``checks``: every input check that runs before anything is written or started.
- ``cluster``: the Ray session, what a trial asks of the cluster, shared storage.
- ``search``: ``sslstudy search`` (checks, then the study); ``tuner``: Ray Tune,
  Optuna's TPE and ASHA, every method's search in one Tuner (``per_method``: the
  searcher and scheduler that keep the methods' searches apart) or one search across
  methods.
- ``train``: ``sslstudy train`` (one configuration, no Ray, no Optuna).

May import: every other package of the project (``trainables``, ``tracking``,
``search_spaces``; ``analysis`` from the CLI only), Ray, Optuna, MLflow. Nothing imports
``study``.
"""
