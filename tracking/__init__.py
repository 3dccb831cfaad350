"""Everything written to or read from MLflow, in one place.

- ``schema``: the names a run is recorded under (tags, statuses, metrics, artifacts) as
  constants: the contract between what trials write and what the analysis reads. It
  imports nothing, so every layer, the torch core included, may use it.
- ``uris``: tracking URIs (SQLite paths made absolute, artifact locations, the runs view).
- ``runs``: the lifecycle of the study's parent run and of each trial's run (create,
  continue after a retry or resume, log, close with a status).
- ``read``: reading an experiment back (runs, parents, histories, recorded spaces).
- ``server``: the tracking server for clusters and the check that one answers.

May import: MLflow and the standard library (``schema`` and ``errors``: nothing). Never
torch, Ray, Optuna, or the project's other packages, so the analysis can read a study on
any machine.
"""
