"""The error every reader and writer of this package raises on a bad file."""
from __future__ import annotations

from npiseg_ros.core.errors import NPISegError

__all__ = ["DatasetFormatError"]


class DatasetFormatError(NPISegError, ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names the file and fix."""
