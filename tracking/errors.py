"""The tracking store's input errors, apart so callers can catch them without MLflow."""


class TrackingError(ValueError):
    """A tracking URI, server or experiment that cannot be used: one line, exit 2."""
