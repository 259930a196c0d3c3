"""Training scalars as CSV files plus a PNG of the curves (no TensorBoard dependency).

``train.csv``: one row per logged step; ``val.csv``: one row per validation (per folder). On
resume, rows past the resumed step are dropped so the files describe exactly one run.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class ScalarLog:
    """Append-only CSV of dict rows with a fixed header (written on first use)."""

    def __init__(self, path: str | os.PathLike, fields: list[str]) -> None:
        self.path = Path(path)
        self.fields = fields

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step`` > the given step (a resumed run rewrites them)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as stream:
            rows = [row for row in csv.DictReader(stream) if int(float(row["step"])) <= step]
        self._write(rows, mode="w")

    def append(self, row: dict[str, Any]) -> None:
        self._write([row], mode="a")

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as stream:
            return list(csv.DictReader(stream))

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = mode == "w" or not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, mode, newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _format(row.get(k, "")) for k in self.fields})


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def plot_curves(train: ScalarLog, val: ScalarLog, path: str | os.PathLike) -> None:
    """Loss terms (smoothed), KL weight / LR and validation IoU@k over steps, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = train.rows()
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    window = max(1, len(rows) // 50)
    for key in ("loss", "seg"):
        axes[0].plot(steps, _smooth([float(r[key]) for r in rows], window), label=key)
    axes[0].set_title(f"training loss (moving mean of {window})")
    axes[0].set_xlabel("step")
    axes[0].legend()
    for key in ("kl_scene", "kl_objects"):
        axes[1].plot(steps, _smooth([float(r[key]) for r in rows], window), label=key)
    axes[1].set_yscale("log")
    axes[1].set_title("KL terms (nats)")
    axes[1].set_xlabel("step")
    axes[1].legend()
    val_rows = val.rows()
    for folder in sorted({r["folder"] for r in val_rows}):
        mine = [r for r in val_rows if r["folder"] == folder]
        for key in ("IoU@1", "IoU@5"):
            axes[2].plot([int(r["step"]) for r in mine], [100 * float(r[key]) for r in mine],
                         marker="o", label=f"{Path(folder).name} {key}")
    axes[2].set_title("validation mIoU (%)")
    axes[2].set_xlabel("step")
    if val_rows:
        axes[2].legend(fontsize=7)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
