"""The input error of the ``study`` layer, kept apart from the config schema so that the
command line can catch it without importing pydantic, torch or the method catalogue."""


class ConfigError(ValueError):
    """Invalid user input; the CLI prints it as one line and exits with status 2."""


class StudyInterrupted(Exception):
    """The user stopped the trials (Ctrl-C) before all of them finished. Tune saved them
    and the searcher; the CLI says how to continue and exits with status 130.
    ``unfinished`` is None where the count is unknown (a fit cancelled through Ray
    Client)."""

    def __init__(self, experiment_path: str, unfinished: int | None, trials: int) -> None:
        left = (f"{unfinished} of the {trials} trials" if unfinished is not None
                else f"some of the {trials} trials")
        super().__init__(
            f"interrupted: {left} in {experiment_path} had not finished; Tune saved where "
            "they were: run the same command with --resume to continue"
        )
