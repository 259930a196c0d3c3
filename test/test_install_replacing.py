"""The SIGSEGV of the node fuzzing (issue 21): reinstalling the interface libraries under running
processes.

The 60,000-message fuzz run of this change ended with the node AND its client killed by SIGSEGV
at the same instant, both inside a ``publish`` of an npiseg_ros message: at that second
``scripts/build_interfaces.sh`` (run by someone else on the machine) rebuilt the interfaces and
``cp -a``'d them over the libraries both processes had mapped. A copy into an existing file
rewrites the pages a running process executes; ``scripts/install_replacing.sh`` renames a new
file over the old one instead, so running processes keep the old inode.
"""
from __future__ import annotations

import mmap
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install_replacing.sh"
OLD, NEW = b"old library code " * 256, b"NEW LIBRARY CODE " * 256


def _mapped(path: Path) -> mmap.mmap:
    """``path`` mapped the way the dynamic loader maps a library (private, read-only)."""
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    stage, venv = tmp_path / "stage", tmp_path / "venv"
    (stage / "lib").mkdir(parents=True)
    (stage / "lib" / "libnpiseg_ros__typesupport.so").write_bytes(NEW)
    (stage / "lib" / "libnpiseg_ros__typesupport.so.1").symlink_to("libnpiseg_ros__typesupport.so")
    (stage / "share" / "npiseg_ros").mkdir(parents=True)
    (stage / "share" / "npiseg_ros" / "package.xml").write_text("<package/>")
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "libnpiseg_ros__typesupport.so").write_bytes(OLD)
    return stage, venv


def test_an_in_place_copy_rewrites_a_library_under_a_running_process(tmp_path):
    """The crash's mechanism (what build_interfaces.sh did): the mapped bytes change."""
    stage, venv = _trees(tmp_path)
    mapped = _mapped(venv / "lib" / "libnpiseg_ros__typesupport.so")
    subprocess.run(["cp", "-a", f"{stage}/.", f"{venv}/"], check=True)
    assert mapped[:len(NEW)] == NEW  # a running process would now execute other code


def test_install_replacing_leaves_running_processes_their_library(tmp_path):
    stage, venv = _trees(tmp_path)
    library = venv / "lib" / "libnpiseg_ros__typesupport.so"
    mapped, inode = _mapped(library), library.stat().st_ino
    subprocess.run(["bash", str(SCRIPT), str(stage), str(venv)], check=True)
    assert mapped[:len(OLD)] == OLD              # the running process keeps what it loaded
    assert library.read_bytes() == NEW and library.stat().st_ino != inode  # new ones load this
    link = venv / "lib" / "libnpiseg_ros__typesupport.so.1"
    assert link.is_symlink() and os.readlink(link) == "libnpiseg_ros__typesupport.so"
    assert (venv / "share" / "npiseg_ros" / "package.xml").read_text() == "<package/>"
    assert not [p for p in venv.rglob("*") if ".installing." in p.name]
