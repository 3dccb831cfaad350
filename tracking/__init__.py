"""The study's records in MLflow: their names, writing them, reading them back.

- ``schema``: the names a run is recorded under (tags, statuses, metrics, artifacts) as
  constants: the contract between what trials write and what the analysis reads. It
  imports only the standard library, so every layer, the torch core included, may use
  it.
- ``errors``: the tracking store's input error, apart so callers can catch it without
  MLflow.
- ``uris``: tracking URIs (SQLite paths made absolute, artifact locations, the runs view).
- ``runs``: the lifecycle of the study's parent run and of each trial's run (create,
  continue after a retry or resume, log, close with a status).
- ``read``: reading an experiment back (runs, parents, histories, recorded spaces).
- ``server``: the tracking server for clusters and the check that one answers.
- ``deepcave``: a study in DeepCAVE's run format, for ``sslstudy export``.

``study`` (the sweep's parent run, the Model Registry) and ``analysis`` (a run search, an
artifact download) also call MLflow's client directly.

May import: MLflow, SQLAlchemy's exceptions (MLflow's database layer, to tell a file that
is not a database) and the standard library (``schema`` and ``errors``: the standard
library only). Never torch, Ray, Optuna, or the project's other packages, so the analysis
can read a study on any machine.
"""
