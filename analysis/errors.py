"""The analysis's input errors, kept apart so the CLI can report them without importing
the analysis itself."""


class AnalysisInputError(ValueError):
    """Bad analysis input (unknown experiment, missing metric...): one line, exit 2."""
