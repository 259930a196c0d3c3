"""The issue's 50-frame check of npiseg-annotate, scripted: a synthetic drive bag (two streets,
an empty and an all-NaN frame), the first sweep labelled, stepping frame to frame carrying the
clicks through /tf, then the triage pass (progress bar, CSV, plot).

    python benchmarks/annotate_drive50.py [OUT]        (default out/annotate/drive50_check)

Writes OUT/bag, OUT/session (autosaves, exports, triage.csv, triage.png), OUT/summary.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from npiseg_ros.annotate.sources import open_source
from npiseg_ros.annotate.synthdrive import write_synthetic_bag
from npiseg_ros.annotate.session import load_shipped_session
from npiseg_ros.annotate.workspace import Workspace


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/annotate/drive50_check")
    if out.exists():
        raise SystemExit(f"{out} exists; give a new folder")
    bag = write_synthetic_bag(out / "bag", 50, scene_every=25, bad_frames={30: "empty",
                                                                          31: "nan"})
    session, checkpoint = load_shipped_session()
    workspace = Workspace(session, out / "session", open_source(bag), source_path=str(bag))
    xyz = workspace.frame.xyz
    near = np.flatnonzero((np.hypot(xyz[:, 0], xyz[:, 1]) < 12) & (xyz[:, 2] > -0.5))
    workspace.click(point_index=int(near[np.argmax(xyz[near, 2])]))
    workspace.new_object()
    workspace.click(position=xyz[near[len(near) // 2]])
    steps = []
    start = time.perf_counter()
    for _ in range(49):
        workspace.step(1)
        state = workspace.state()
        carry = state["carry"] or {}
        steps.append({"frame": state["frame_name"], "ok": state["ok"], "error": state["error"],
                      "carried": carry.get("carried"), "missed": len(carry.get("missed", [])),
                      "objects": {o["id"]: o["points"] for o in state["objects"]}})
    step_s = (time.perf_counter() - start) / 49
    start = time.perf_counter()
    triage = subprocess.run([sys.executable, "-m", "npiseg_ros.annotate", "triage", str(bag),
                             "--session", str(out / "session")], check=True)
    summary = {"checkpoint": checkpoint, "mean_step_s": round(step_s, 2),
               "triage_s": round(time.perf_counter() - start, 1), "returncode": triage.returncode,
               "steps": steps}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for index, step in enumerate(steps, 1):
        print(index, step)
    print({k: v for k, v in summary.items() if k != "steps"})


if __name__ == "__main__":
    main()
