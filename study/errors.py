"""The input error of the ``study`` layer, kept apart from the config schema so that the
command line can catch it without importing pydantic, torch or the method catalogue."""


class ConfigError(ValueError):
    """Invalid user input; the CLI prints it as one line and exits with status 2."""
