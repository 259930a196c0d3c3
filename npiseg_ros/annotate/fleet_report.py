"""What fleet triage leaves for people: frame thumbnails, ``triage.csv``, ``triage.png`` and
``index.html`` (the top frames with a thumbnail each). ``fleet.py`` computes the rows."""
from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path

import numpy as np

from npiseg_ros.io.atomic import atomic_write_bytes

__all__ = ["CSV_COLUMNS", "thumbnail_png", "write_reports", "THUMBNAIL_PX"]

CSV_COLUMNS = ("rank", "score", "source", "frame", "index", "stamp_ns", "status", "error",
               "points", "dropped", "objects", "background_clicks", "mean_uncertainty",
               "max_uncertainty", "split", "merge", "novelty", "encode_ms", "frame_ms",
               "thumbnail", "worker", "run_id")
"""``triage.csv``: the parquet's columns without the descriptor; ``frame`` and ``rank`` are what
the browser tool reads to open frames in rank order (``--order triage``)."""

THUMBNAIL_PX = 160
THUMBNAIL_HALF_WIDTH_M = 30.0
"""Thumbnails show the square of +-30 m around the sensor (or +- max range when set)."""

_BACKGROUND_RGB = (0.55, 0.55, 0.55)
_UNLABELLED_RGB = (0.25, 0.25, 0.25)


def _object_colours(count: int) -> np.ndarray:
    """(count, 3) float RGB in [0, 1], distinct for the first 20 ids (matplotlib's tab20)."""
    from matplotlib import colormaps

    table = np.asarray(colormaps["tab20"].colors, np.float64)
    return table[np.arange(count) % len(table)]


def thumbnail_png(xyz: np.ndarray, labels: np.ndarray, clicks: np.ndarray, *,
                  half_width_m: float = THUMBNAIL_HALF_WIDTH_M,
                  size_px: int = THUMBNAIL_PX) -> bytes:
    """A small top-down PNG of a frame coloured by the model's labels.

    Args:
        xyz: (N, 3) float, metres, sensor frame; non-finite rows are not drawn.
        labels: (N,) int object id per point (0 = background grey, -1 = not labelled, dark).
        clicks: (K,) int point indices of the object clicks, drawn as white dots.
        half_width_m: the image covers +-this around the sensor, x to the right, y up.
        size_px: width and height of the image.
    """
    image = np.zeros((size_px, size_px, 3), np.float64)
    finite = np.isfinite(xyz).all(axis=1)
    scale = size_px / (2 * half_width_m)

    def pixels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        column = np.floor((points[:, 0] + half_width_m) * scale).astype(np.int64)
        row = np.floor((half_width_m - points[:, 1]) * scale).astype(np.int64)
        inside = (column >= 0) & (column < size_px) & (row >= 0) & (row < size_px)
        return row, column, inside

    # draw by increasing label so that objects lie on top of the background they touch
    order = np.flatnonzero(finite)[np.argsort(labels[finite], kind="stable")]
    row, column, inside = pixels(xyz[order])
    label = labels[order]
    colours = np.empty((order.size, 3))
    colours[label < 0] = _UNLABELLED_RGB
    colours[label == 0] = _BACKGROUND_RGB
    things = label > 0
    if things.any():
        colours[things] = _object_colours(int(label.max()) + 1)[label[things]]
    image[row[inside], column[inside]] = colours[inside]
    if len(clicks):
        row, column, inside = pixels(xyz[np.asarray(clicks, np.int64)])
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = np.clip(row + dr, 0, size_px - 1), np.clip(column + dc, 0, size_px - 1)
            image[r[inside], c[inside]] = 1.0
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, image, format="png")
    return buffer.getvalue()


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def write_reports(out: Path, rows: list[dict], *, top: int = 50) -> None:
    """``triage.csv`` (source order), ``triage.png`` and ``index.html`` (the ``top`` frames)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: _text(row.get(key)) for key in CSV_COLUMNS} for row in rows)
    atomic_write_bytes(out / "triage.csv", text.getvalue().encode(), mode=0o644)
    _plot(out / "triage.png", rows)
    atomic_write_bytes(out / "index.html", _index_html(rows, top).encode(), mode=0o644)


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [r for r in rows if r["frame"]]      # a source that could not be opened has none
    index = np.arange(len(frames))
    value = lambda key: np.array([np.nan if r.get(key) is None else float(r[key])
                                  for r in frames])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    sources = list(dict.fromkeys(r["source"] for r in frames))
    palette = ("#3070c0", "#30a070")
    colours = ["#c03030" if r["status"] != "ok" else palette[sources.index(r["source"]) % 2]
               for r in frames]
    top.bar(index, np.nan_to_num(value("score"), nan=0.0), color=colours, width=0.85)
    for i, row in enumerate(frames):
        if row["status"] != "ok":
            top.annotate("unusable", (i, 0), rotation=90, fontsize=7, color="#c03030",
                         va="bottom", ha="center")
    starts = [i for i in range(1, len(frames)) if frames[i]["source"] != frames[i - 1]["source"]]
    for start in starts:
        for axis in (top, bottom):
            axis.axvline(start - 0.5, color="#888888", linewidth=0.8)
    top.set_ylabel("attention score")
    top.set_title("npiseg-annotate triage (higher = look first; colour = source, red = "
                  "unusable frame)", fontsize=10)
    uncertainty = value("mean_uncertainty")
    scale = np.nanmax(np.append(uncertainty, 1e-12))
    bottom.plot(index, uncertainty / scale, ".-", label="object uncertainty (/ max)")
    bottom.plot(index, value("split"), ".-", label="proposals split")
    bottom.plot(index, value("merge"), ".-", label="masks merged / leaked")
    bottom.plot(index, value("novelty"), ".-", label="novelty (descriptor)")
    bottom.set_ylim(-0.02, 1.3)  # room for the legend above the terms
    bottom.set_xlabel("frame (sources in command-line order, frames in source order)")
    bottom.legend(fontsize=8, ncol=4, loc="upper right")
    fig.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    fig.savefig(temporary, dpi=90)
    plt.close(fig)
    temporary.replace(path)


_STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}"
          "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;"
          "text-align:right;vertical-align:middle}td.l,th.l{text-align:left}"
          ".failed{color:#b02020}img{image-rendering:pixelated;background:#000}")


def _index_html(rows: list[dict], top: int) -> str:
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["rank"])
    failed = [r for r in rows if r["status"] != "ok"]
    sources = list(dict.fromkeys(r["source"] for r in rows))
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>npiseg triage</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Triage: {len(ok)} frames of {len(sources)} sources</h1>",
             "<p>Higher score = look first. Terms (docs/triage.md): object uncertainty (divided "
             "by its largest value), proposals split by the model, masks merged or leaked, "
             "novelty. Thumbnails: top-down, coloured by the model's labels after the automatic "
             "clicks (white dots), grey = background. "
             "<a href='triage.csv'>triage.csv</a> · <a href='triage.parquet'>triage.parquet</a>"
             "</p><p><img src='triage.png' alt='score per frame' style='max-width:100%'></p>",
             f"<h2>Top {min(top, len(ok))} frames</h2><table><tr><th>rank</th><th>score</th>"
             "<th class='l'>source</th><th class='l'>frame</th><th>objects</th>"
             "<th>uncertainty</th><th>split</th><th>merge</th><th>novelty</th>"
             "<th>view</th></tr>"]
    for row in ok[:top]:
        image = (f"<img src='{e(row['thumbnail'])}' width='{THUMBNAIL_PX}' "
                 f"height='{THUMBNAIL_PX}' alt='{e(row['frame'])}'>" if row.get("thumbnail")
                 else "")
        parts.append(
            f"<tr><td>{row['rank']}</td><td>{_text(row['score'])}</td>"
            f"<td class='l' title='{e(row['source'])}'>{e(Path(row['source']).name)}</td>"
            f"<td class='l'>{e(row['frame'])}</td><td>{row['objects']}</td>"
            f"<td>{_text(row['mean_uncertainty'])}</td><td>{_text(row['split'])}</td>"
            f"<td>{_text(row['merge'])}</td><td>{_text(row['novelty'])}</td>"
            f"<td>{image}</td></tr>")
    parts.append("</table>")
    if failed:
        parts.append(f"<h2 class='failed'>Not scored ({len(failed)})</h2><table><tr>"
                     "<th class='l'>source</th><th class='l'>frame</th><th class='l'>error</th>"
                     "</tr>")
        for row in failed:
            parts.append(f"<tr class='failed'><td class='l'>{e(row['source'])}</td>"
                         f"<td class='l'>{e(row['frame'] or '(whole source)')}</td>"
                         f"<td class='l'>{e(row['error'] or '')}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
