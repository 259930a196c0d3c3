"""Typed errors raised by the core. Every message says what was wrong and what to do."""


class NPISegError(Exception):
    """Base class of every error the core raises on bad input."""


class InvalidCloudError(NPISegError, ValueError):
    """The point cloud cannot be segmented (empty, all non-finite, mismatched arrays, ...)."""


class NoCloudError(NPISegError, RuntimeError):
    """An operation needs a cloud but ``set_cloud`` has not been called (or it failed)."""


class ClickRejectedError(NPISegError, ValueError):
    """A click cannot be used (too far from every point, bad object id, bad index)."""


class CheckpointError(NPISegError, ValueError):
    """A checkpoint is missing, corrupt, pickled, of another format version or another config."""


class ConfigError(NPISegError, ValueError):
    """A configuration value is out of range or of the wrong type."""
