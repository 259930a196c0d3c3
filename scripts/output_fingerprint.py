#!/usr/bin/env python3
"""SHA-256 of everything a user receives, to prove a refactor changes no output bit.

Runs the shipped models through the public session API on two real clouds (the bundled
SemanticKITTI sweep: the LiDAR model; the val S3DIS room with colours: the colour model),
20 clicks each on seeded points with two undos and a new object, and hashes after every step
the labels, the uncertainty and the suggested click, plus the node's ``~/segmented`` and
``~/uncertainty`` message bytes (``OutputClouds``, no DDS needed). Compare the JSON of two
commits on the same machine (floating point differs between CPUs):

    python scripts/output_fingerprint.py --out before.json   # on the old commit
    python scripts/output_fingerprint.py --out after.json    # on the new one
    cmp before.json after.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO.parent / "shared/data/semantickitti/sequences/00/velodyne/000000.bin"
ROOM = REPO.parent / "shared/data/real/indoor/val/s3dis_Area_5_storage_3.npz"


def digest(*arrays) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def clouds() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    sweep = np.fromfile(SWEEP, np.float32).reshape(-1, 4)[:, :3]
    with np.load(ROOM, allow_pickle=False) as room:
        return {"lidar_sweep": (sweep, None),
                "rgb_room": (room["xyz"].astype(np.float32), room["colors"])}


def run(session, xyz: np.ndarray, colors: np.ndarray | None, clicks: int = 20) -> list[dict]:
    from std_msgs.msg import Header

    from npiseg_ros.ros.conversions import OutputClouds

    session.set_cloud(xyz, colors=colors)
    outputs = OutputClouds(xyz)
    header = Header(frame_id="sensor")
    rng = np.random.default_rng(7)
    steps = []
    for step in range(clicks):
        if step == 10:
            session.new_object()
        object_id = 0 if step % 4 == 3 else (1 if step < 10 else 2)
        point = xyz[int(rng.integers(xyz.shape[0]))]
        session.add_click(tuple(float(v) for v in point), object_id=object_id)
        if step in (6, 14):
            session.predict()
            session.undo()
        prediction = session.predict()
        segmented = outputs.segmented(header, prediction.labels, prediction.uncertainty)
        uncertainty = outputs.uncertainty(header, prediction.uncertainty)
        suggestion = (np.zeros(3) if prediction.suggested_click is None
                      else np.asarray(prediction.suggested_click, np.float64))
        steps.append({"labels": digest(prediction.labels),
                      "uncertainty": digest(prediction.uncertainty),
                      "suggestion": digest(suggestion),
                      "segmented_msg": digest(np.frombuffer(bytes(segmented.data), np.uint8)),
                      "uncertainty_msg": digest(np.frombuffer(bytes(uncertainty.data),
                                                              np.uint8))})
    return steps


def build_session():
    """The node's default session: both shipped models, picked per cloud."""
    from npiseg_ros.core.checkpoint import load_model
    from npiseg_ros.core.session import SegmentationSession
    from npiseg_ros.resources import shipped_checkpoint, shipped_rgb_checkpoint

    return SegmentationSession(load_model(shipped_checkpoint()), device="cpu", seed=0,
                               rgb_model=load_model(shipped_rgb_checkpoint()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    for name, (xyz, colors) in clouds().items():
        result[name] = run(build_session(), xyz, colors)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {sum(len(v) for v in result.values())} steps")


if __name__ == "__main__":
    main()
