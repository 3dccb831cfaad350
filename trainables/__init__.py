"""Pretraining and evaluating one configuration, in two layers.

The torch core (no Ray, MLflow, Optuna, ``study``, ``analysis``; only ``tracking.schema``
for the names of what it reports, and ``search_spaces`` for hyperparameter declarations):

- ``data`` (in-memory uint8 datasets), ``augment`` (batched, on-device augmentation and
  pretext transforms), ``backbones``, ``heads``, ``losses`` (pure functions on tensors),
  ``optim`` (LARS), ``distributed`` (the gather with gradient), ``evaluation`` (kNN,
  probes),
  ``protocols/`` (the source documents' evaluation protocols: fine-tuning with few
  labels, pruning with quantization, retrieval, embedding maps);
- ``methods/`` (one file per method over the ``SSLMethod`` contract; the registry and
  ``build_method`` in ``methods/__init__``), ``hyperparameters`` (the loop's own, and
  resolving a trial's values once), ``loop`` (the one generic loop), ``pretrain`` (build
  a method and run the loop: the core's entry point).

Above it, recording a trial in MLflow (may import ``tracking`` too):

- ``recording``: a trial's settings, its run's tags, training with the run closed as
  completed or failed; shared by
- ``trainable``: the Ray Tune trainable (the only module that imports Ray), and
- ``local_run``: ``sslstudy train``'s single run, without Ray;
- ``logs``: what a trial's process logs (standard library only: also Ray's setup hook of
  every process of a study's job).
"""
