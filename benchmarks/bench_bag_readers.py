"""Bag readers for npiseg-annotate, measured: rosbags (sqlite3 + MCAP) against the mcap package
with mcap-ros2-support (MCAP only), on the same synthetic 50-frame drive.

    python benchmarks/bench_bag_readers.py out/annotate/drive50 out/annotate/drive50_mcap

Prints and writes JSON: time to open and index the topic, time to read every frame in order and
5 frames at random, per frame, and whether the decoded points agree. mcap + mcap-ros2-support
are only needed for the comparison (install them anywhere on PYTHONPATH).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _rosbags(bag: Path) -> dict:
    from npiseg_ros.annotate.sources import FrameError, open_source

    start = time.perf_counter()
    source = open_source(bag)
    opened = time.perf_counter() - start
    start = time.perf_counter()
    frames, good = [], []
    for index in range(len(source)):
        try:
            frames.append(source.frame(index).xyz)
            good.append(index)
        except FrameError:  # the deliberately broken frames of a --bad-frames drive
            pass
    sequential = (time.perf_counter() - start) / len(frames)
    rng = np.random.default_rng(0)
    picks = rng.choice(good, 5, replace=False)
    start = time.perf_counter()
    for index in picks:
        source.frame(int(index))
    random_access = (time.perf_counter() - start) / len(picks)
    source.close()
    return {"open_index_s": opened, "per_frame_sequential_s": sequential,
            "per_frame_random_s": random_access, "frames": frames}


def _mcap(bag: Path) -> dict:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from npiseg_ros.annotate.bag import decode_pointcloud2

    path = next(bag.glob("*.mcap"))
    start = time.perf_counter()
    handle = open(path, "rb")
    reader = make_reader(handle, decoder_factories=[DecoderFactory()])
    summary = reader.get_summary()
    stamps = [m.log_time for _, _, m in reader.iter_messages(topics=["/velodyne_points"])]
    opened = time.perf_counter() - start
    start = time.perf_counter()
    frames = []
    for _, _, _, message in reader.iter_decoded_messages(topics=["/velodyne_points"]):
        if message.width:
            frames.append(decode_pointcloud2(message)[0])
    sequential = (time.perf_counter() - start) / len(frames)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(stamps), 5, replace=False)
    start = time.perf_counter()
    for index in picks:
        for _, _, _, message in reader.iter_decoded_messages(
                topics=["/velodyne_points"], starting_at=stamps[index],
                ending_before=stamps[index] + 1):
            break
    random_access = (time.perf_counter() - start) / len(picks)
    handle.close()
    del summary
    return {"open_index_s": opened, "per_frame_sequential_s": sequential,
            "per_frame_random_s": random_access, "frames": frames}


def main() -> None:
    sqlite_bag, mcap_bag = Path(sys.argv[1]), Path(sys.argv[2])
    results = {}
    for name, function, bag in (("rosbags sqlite3", _rosbags, sqlite_bag),
                                ("rosbags mcap", _rosbags, mcap_bag),
                                ("mcap+mcap-ros2-support", _mcap, mcap_bag)):
        try:
            results[name] = function(bag)
        except ImportError as error:
            print(f"{name}: skipped ({error})")
    reference = results["rosbags mcap"]["frames"]
    out = {}
    for name, result in results.items():
        frames = result.pop("frames")
        if "mcap" in name and name != "rosbags mcap":
            result["same_points_as_rosbags"] = all(
                np.array_equal(a, b) for a, b in zip(frames, reference))
        out[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
        print(name, out[name])
    target = Path("benchmarks/results/bag_readers.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
