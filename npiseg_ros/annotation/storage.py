"""The files an annotator wrote into its output directory, and a cap on their total size.

Anything on the ROS graph can make the node write (``~/save_annotation``, clicks that are
autosaved, the ``save_every`` policy), so its writes live under a budget: after every write the
total size of the files it wrote - in this run and in earlier runs - is compared with the cap
and its oldest files are removed until the total fits again.

Which files are its own: the ledger ``<output directory>/.npiseg_files`` lists every file the
annotator wrote, with the size, modification time and inode it left it with (one JSON line per
write, appended; a crash loses at most the lines not yet on disk, whose files are then simply
never removed). A file is removed only while it is exactly as the annotator left it (same size,
mtime and inode), a regular file (links are never followed) inside the directory. Anything else
there - a user's files, a file somebody changed since - is never touched and does not count.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from npiseg_ros.io.atomic import atomic_write

__all__ = ["LEDGER_NAME", "OutputBudget"]

LEDGER_NAME = ".npiseg_files"

_COMPACT_EVERY = 1000
"""Rewrite the ledger (live entries only) once it holds this many more lines than entries."""


@dataclass(frozen=True)
class _Written:
    size: int
    mtime_ns: int
    inode: int


class OutputBudget:
    """Ledger of the files written under ``root`` and the size cap on them (one thread).

    Args:
        root: the output directory (absolute, links resolved: ``paths.output_root``).
        cap_bytes: the most bytes the listed files may take together; 0 = no cap (the ledger
            is kept all the same, so a cap set later covers the earlier files).
    """

    def __init__(self, root: Path, cap_bytes: int = 0) -> None:
        if cap_bytes < 0:
            raise ValueError(f"cap_bytes must be >= 0, got {cap_bytes}")
        self.root = Path(root)
        self.cap_bytes = int(cap_bytes)
        self._ledger = self.root / LEDGER_NAME
        self._files: dict[str, _Written] = {}
        self._lines = 0
        self._load()

    @property
    def total_bytes(self) -> int:
        """Bytes of the files in the ledger (as they were written)."""
        return sum(entry.size for entry in self._files.values())

    @property
    def files(self) -> list[Path]:
        """The listed files, oldest first."""
        return [self.root / name for name, _ in sorted(self._files.items(),
                                                        key=lambda item: item[1].mtime_ns)]

    def record(self, *paths: Path) -> None:
        """Add files just written (missing ones and ones outside the root are skipped)."""
        lines = []
        for path in paths:
            name = self._name(Path(path))
            if name is None:
                continue
            try:
                info = os.lstat(self.root / name)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            self._files[name] = _Written(info.st_size, info.st_mtime_ns, info.st_ino)
            lines.append({"path": name, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
                          "inode": info.st_ino})
        self._append(lines)

    def enforce(self, keep: tuple[Path, ...] = ()) -> tuple[list[Path], list[str]]:
        """Remove the oldest listed files until the total fits the cap.

        Args:
            keep: files never removed now (the ones just written).

        Returns:
            (files removed, problems: files over the cap that could not be removed and why).
        """
        removed: list[Path] = []
        problems: list[str] = []
        if not self.cap_bytes or self.total_bytes <= self.cap_bytes:
            return removed, problems
        kept = {self._name(Path(path)) for path in keep}
        forgotten = []
        for name, entry in sorted(self._files.items(), key=lambda item: item[1].mtime_ns):
            if self.total_bytes <= self.cap_bytes:
                break
            if name in kept:
                continue
            path = self.root / name
            reason = self._why_not_ours(path, entry)
            if reason is None:
                try:
                    os.unlink(path)
                    removed.append(path)
                except OSError as error:
                    problems.append(f"{path}: {error}")
                    continue
            elif reason != "gone":
                problems.append(f"{path} left alone: {reason}")
            del self._files[name]       # removed, gone, or no longer the file it wrote
            forgotten.append(name)
        self._append([{"path": name, "removed": True} for name in forgotten])
        if self.total_bytes > self.cap_bytes:
            problems.append(f"the files just written take {self.total_bytes} bytes, more than "
                            f"the cap of {self.cap_bytes}")
        return removed, problems

    # ------------------------------------------------------------------ internals
    def _name(self, path: Path) -> str | None:
        """``path`` relative to the root, None when it is not under it."""
        try:
            relative = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        return None if relative.parts[:1] in ((), ("..",)) else relative.as_posix()

    def _why_not_ours(self, path: Path, entry: _Written) -> str | None:
        """None when ``path`` is still the file written (size, mtime, inode), else why not."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return "gone"
        except OSError as error:
            return str(error)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file any more"
        if (info.st_size, info.st_mtime_ns, info.st_ino) != (entry.size, entry.mtime_ns,
                                                             entry.inode):
            return "changed since it was written"
        # a directory on the way replaced by a link would lead elsewhere: resolve and check
        if self._name(Path(os.path.realpath(path))) is None:
            return "now outside the output directory"
        return None

    def _load(self) -> None:
        try:
            handle = os.open(self._ledger, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return      # none yet, or a link someone put there: start a new one
        with os.fdopen(handle, "rb") as file:
            data = file.read()
        for line in data.decode("utf-8", "replace").splitlines():
            self._lines += 1
            try:
                item = json.loads(line)
                name = str(item["path"])
                if item.get("removed"):
                    self._files.pop(name, None)
                else:
                    self._files[name] = _Written(int(item["size"]), int(item["mtime_ns"]),
                                                 int(item["inode"]))
            except (ValueError, KeyError, TypeError):
                continue   # a line torn by a crash: its file is just not counted

    def _append(self, items: list[dict]) -> None:
        if not items:
            return
        if self._lines > len(self._files) + _COMPACT_EVERY:
            self._compact()
            return
        text = "".join(json.dumps(item, sort_keys=True) + "\n" for item in items)
        try:
            # O_NOFOLLOW: a link planted in place of the ledger must not redirect the write
            handle = os.open(self._ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                             os.O_NOFOLLOW, 0o600)
        except OSError:
            return      # the annotation goes on; the next write tries again
        with os.fdopen(handle, "ab") as file:
            file.write(text.encode())
        self._lines += len(items)

    def _compact(self) -> None:
        items = [{"path": name, "size": entry.size, "mtime_ns": entry.mtime_ns,
                  "inode": entry.inode} for name, entry in self._files.items()]
        text = "".join(json.dumps(item, sort_keys=True) + "\n" for item in items)
        try:
            atomic_write(self._ledger, lambda file: file.write(text.encode()), mode=0o600)
        except OSError:
            return
        self._lines = len(items)
