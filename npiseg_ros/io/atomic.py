"""Crash-safe file writes: a file is always either its old or its new complete content.

Recipe: write a temporary file (``O_EXCL``) in the destination's folder, fsync it, rename it
over the destination, fsync the folder. Any error (full disk, read-only folder, ...) removes
the temporary file and leaves the destination untouched.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "check_writable", "previous_path"]


def previous_path(path: Path) -> Path:
    """Where the generation before ``path`` is kept (``x.npz`` -> ``x.prev.npz``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system allows it)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *,
                 keep_previous: bool = False, mode: int | None = None) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    Args:
        path: destination; its parent folders are created.
        write: writes the whole content into the binary file object it is given.
        keep_previous: first rename the old ``path`` (a regular file, not a link) to
            :func:`previous_path`, so that one older generation survives.
        mode: permission bits of the new file (default: ``mkstemp``'s 0o600).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        if keep_previous and path.is_file() and not path.is_symlink():
            os.replace(path, previous_path(path))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> Path:
    """:func:`atomic_write` of ``data``; returns ``path``."""
    return atomic_write(path, lambda file: file.write(data), mode=mode)


def check_writable(directory: str | os.PathLike) -> None:
    """Create ``directory`` if needed and write + remove a probe file; raises OSError if not."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".npiseg-probe.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as probe:
            probe.write(b"npiseg")
            probe.flush()
            os.fsync(probe.fileno())
    finally:
        Path(name).unlink(missing_ok=True)
