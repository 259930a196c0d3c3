"""Helpers of the npiseg-annotate tests: start the CLI as a process, wait on its URL, HTTP."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_SCAN = REPO.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"
KITTI_ROOT = REPO.parent / "shared/data/semantickitti"
ARTIFACTS = REPO / "out" / "test_annotate"


class ToolProcess:
    """``python -m npiseg_ros.annotate ...`` with --port 0; ``url`` once it serves."""

    def __init__(self, *args: str, cwd: Path = REPO, timeout: float = 600,
                 command: list[str] | None = None, env: dict | None = None) -> None:
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1", **(env or {}))
        command = command or [sys.executable, "-m", "npiseg_ros.annotate"]
        self.process = subprocess.Popen(
            [*command, *args, "--port", "0"], cwd=cwd,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.url = self.wait_for("serving http://", timeout).split("serving ", 1)[1].split()[0]

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first output line containing ``text``; fails if the process ends first."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(self.lines)}")
            if line is None:
                raise AssertionError(f"the tool exited before {text!r}:\n{''.join(self.lines)}")
            if text in line:
                return line

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self._thread.join(timeout=60)  # all output read


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=300) as response:
        return response.read()


def post(url: str, action: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "api/" + action, data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
