"""Which 3-D viewer for npiseg-annotate: three.js (the page's view3d.js) or viser, measured.

Both show the bundled SemanticKITTI sweep (124,668 points) in headless Chromium (Debian's
chromium + chromedriver, WebGL through SwiftShader: software rendering, as on a machine
without a GPU) in a 1400 x 900 window. Per viewer:

- load: from ``driver.get`` until a screenshot shows the points (more than 2 % of the
  viewport differs from the background), seconds;
- orbit: the mouse is dragged with the rotate button for ~4 s (selenium actions, small
  steps); the page's requestAnimationFrame callbacks are timed meanwhile: median interval
  between frames, ms, and frames drawn. (A page that draws only when asked, like view3d.js,
  draws once per mouse move; viser's client draws in its own animation loop.)
- for three.js also ``window.npiseg.drawTimes``: one frame with the GPU work waited for.

viser is not a dependency of this project: give ``--viser-python`` a Python that has it
(``python3 -m venv /tmp/viser && /tmp/viser/bin/pip install viser``).

    .venv/bin/python benchmarks/bench_annotate_view.py --viser-python /tmp/viser/bin/python
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"
sys.path.insert(0, str(REPO / "test"))

VISER_SERVER = """
import sys, time, numpy as np, viser
raw = np.fromfile(sys.argv[1], "<f4").reshape(-1, 4)
z = raw[:, 2]
grey = (70 + 110 * np.clip((z + 2.5) / 6, 0, 1)).astype(np.uint8)
server = viser.ViserServer(host="127.0.0.1", port=int(sys.argv[2]))
server.scene.add_point_cloud("/sweep", points=raw[:, :3], colors=np.stack([grey] * 3, 1),
                             point_size=0.06)
print("ready", flush=True)
while True:
    time.sleep(1)
"""

RAF_PROBE = """
window.__frames = [];
(function tick(t) { window.__frames.push(t); requestAnimationFrame(tick); })(performance.now());
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _drawn_share(driver) -> float:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))
    view = image[:, : int(image.shape[1] * 0.7)].astype(int)  # left part: the 3-D view
    background = np.median(view.reshape(-1, 3), axis=0)
    return float(np.mean(np.abs(view - background).sum(axis=2) > 40))


def _measure(driver, url: str, canvas_css: str, rotate_button: int) -> dict:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    start = time.perf_counter()
    driver.get(url)
    while time.perf_counter() - start < 300 and _drawn_share(driver) < 0.02:
        time.sleep(0.1)
    load_s = time.perf_counter() - start
    canvas = max(driver.find_elements(By.CSS_SELECTOR, canvas_css),
                 key=lambda e: e.size["width"] * e.size["height"])
    driver.execute_script(RAF_PROBE)
    builder = ActionBuilder(driver, duration=16)  # one mouse move per 60 Hz frame
    pointer = builder.pointer_action
    pointer.move_to(canvas)
    pointer.pointer_down(button=rotate_button)
    for step in range(240):
        pointer.move_by(3 if step % 60 < 30 else -3, 0)
    pointer.pointer_up(button=rotate_button)
    began = time.perf_counter()
    builder.perform()
    seconds = time.perf_counter() - began
    frames = driver.execute_script("return window.__frames")
    intervals = np.diff(frames)
    return {"load_s": round(load_s, 2), "orbit_s": round(seconds, 2),
            "orbit_frames": int(len(frames)),
            "orbit_median_frame_ms": round(float(np.median(intervals)), 1) if len(intervals)
            else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viser-python", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/annotate_view.json"))
    args = parser.parse_args()
    from annotate_helpers import ToolProcess

    result = {"sweep": str(SWEEP), "points": int(SWEEP.stat().st_size // 16)}
    driver = _browser()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tool = ToolProcess(str(SWEEP), "--session", str(Path(scratch) / "s"))
            try:
                for name, query in (("three.js (view3d.js)", ""), ("2-D canvas (fallback)",
                                                                    "?view=2d")):
                    entry = _measure(driver, tool.url + query, "#cloud3d, #cloud", 2)
                    entry["renderer"] = driver.execute_script("return window.npiseg.renderer")
                    times = driver.execute_script("return window.npiseg.drawTimes(20)")
                    entry["draw_ms_median"] = round(statistics.median(times), 1)
                    result[name] = entry
                    print(name, entry, flush=True)
            finally:
                tool.stop()
        if args.viser_python:
            port = _free_port()
            with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
                script.write(VISER_SERVER)
            server = subprocess.Popen([args.viser_python, script.name, str(SWEEP), str(port)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
            try:
                for line in server.stdout:
                    if line.startswith("ready"):
                        break
                version = subprocess.run([args.viser_python, "-c",
                                          "import viser; print(viser.__version__)"],
                                         capture_output=True, text=True).stdout.strip()
                entry = _measure(driver, f"http://127.0.0.1:{port}/", "canvas", 0)
                entry["version"] = version
                result["viser"] = entry
                print("viser", entry, flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
                os.unlink(script.name)
    finally:
        driver.quit()
    result["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out} (load average {os.getloadavg()} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
