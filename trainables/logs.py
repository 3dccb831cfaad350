"""What a trial's process logs. Standard library only: Ray runs :func:`quiet_ray_logs` in
every process of a study's job as it starts, trial or not."""

from __future__ import annotations

import logging

#: Ray's loggers that write a line, in a trial's process, for every checkpoint it saves
#: and every restore from one (each trial a resumed study continues).
RAY_TRIAL_LOGGERS = ("ray.train", "ray.tune.trainable")


def quiet_ray_logs() -> None:
    """Ray's per-checkpoint lines would drown the study's progress lines on the driver.
    A trial's process restores its checkpoint before the trial's own code runs, so the
    study also runs this as Ray's ``worker_process_setup_hook``."""
    for name in RAY_TRIAL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
