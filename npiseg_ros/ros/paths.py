"""Where the node may write: every file it writes lies inside one configured directory.

``~/save_annotation`` and the ``autosave_directory`` parameter can be set by any process on the
ROS graph, so the paths they carry are untrusted. The node resolves each of them against its
read-only ``output_directory`` (set at start from the params file or launch, never from the
graph) with :func:`resolve_inside`:

- a relative name is taken under the output directory;
- a name with a ``..`` component is refused outright (even when it would land inside);
- an absolute path is accepted only when it lies inside the output directory;
- symbolic links are resolved first (``os.path.realpath``), so a link inside the directory that
  points out of it is refused like the path it points to;
- NUL bytes and empty names are refused.

The check happens right before each write; the writers then create a temporary file with
``O_EXCL`` in the checked directory and ``rename`` it over the destination, which replaces (never
follows) a link at the final name. What is not covered: a local user who can already write
inside the output directory and swaps a checked directory for a link between the check and the
write (a race on the local file system, not something a graph client can do).

No ROS imports: the worker and the tests use this directly.
"""
from __future__ import annotations

import os
from pathlib import Path

from npiseg_ros.core.errors import NPISegError

__all__ = ["PathNotAllowedError", "output_root", "resolve_inside"]


class PathNotAllowedError(NPISegError, ValueError):
    """A path from a request or parameter would make the node write outside its directory."""


def output_root(directory: str | os.PathLike) -> Path:
    """The absolute, symlink-free form of the configured ``output_directory``.

    ``~`` is expanded and a relative directory is taken from the working directory (this value
    comes from the params file, which is trusted). The directory need not exist yet.
    """
    text = os.fspath(directory)
    if not text or "\x00" in text:
        raise PathNotAllowedError(f"output_directory {text!r} is not a usable directory name")
    return Path(os.path.realpath(os.path.expanduser(text)))


def resolve_inside(root: Path, name: str | os.PathLike, what: str = "path") -> Path:
    """``name`` as an absolute, symlink-free path inside ``root``, or :class:`PathNotAllowedError`.

    Args:
        root: the output directory, already passed through :func:`output_root`.
        name: the untrusted path (relative names are taken under ``root``; ``~`` is expanded,
            which only helps when the home directory is inside ``root``).
        what: how the error message names the value (``"save_annotation path"``, ...).
    """
    text = os.fspath(name)
    if not text:
        raise PathNotAllowedError(f"{what} is empty")
    if "\x00" in text:
        raise PathNotAllowedError(f"{what} {text!r} contains a NUL byte")
    path = Path(os.path.expanduser(text))
    if ".." in path.parts:
        raise PathNotAllowedError(
            f"{what} {text!r} contains '..'; give a name inside the output directory {root}")
    candidate = path if path.is_absolute() else root / path
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        through_link = "" if resolved == Path(os.path.abspath(candidate)) else \
            f" (through a symbolic link, it resolves to {resolved})"
        raise PathNotAllowedError(
            f"{what} {text!r} is outside the output directory {root}{through_link}; the node "
            "only writes inside its output_directory parameter (relative names go there)")
    return resolved
