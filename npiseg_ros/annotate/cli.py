"""``npiseg-annotate``: browser labelling and triage of recorded LiDAR drives (no ROS needed).

    npiseg-annotate SOURCE [--topic T] [--session DIR] [--port 8765]      browser tool
    npiseg-annotate --session DIR                                          reopen a session
    npiseg-annotate triage SOURCE [--topic T] [--session DIR]              rank frames (CSV + plot)
    npiseg-annotate make-synth-bag OUT [--frames 50] [--storage mcap]      synthetic test drive

SOURCE: a rosbag2 bag (folder with metadata.yaml, .db3 or .mcap), a KITTI/SemanticKITTI
sequence or velodyne/ folder, or .ply/.pcd/.npz/.bin files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from npiseg_ros.annotate.sources import SourceError, open_source

COMMANDS = ("serve", "triage", "make-synth-bag")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="*", help="bag, velodyne/ folder, cloud file(s)")
    parser.add_argument("--topic", default=None, help="PointCloud2 topic (bags with several)")
    parser.add_argument("--session", default=None,
                        help="session folder (default: annotations/<source name>)")
    parser.add_argument("--checkpoint", default=None,
                        help="model checkpoint (default: the shipped one)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--samples", type=int, default=10, help="Monte-Carlo samples per decode")
    parser.add_argument("--max-range", type=float, default=None,
                        help="label only points within this many metres (horizontal) of the "
                             "sensor; the rest are exported as 0 (the shipped model was trained "
                             "and evaluated on ~15 m crops). Default: every point (a reopened "
                             "session keeps its own)")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"npiseg-annotate{'' if command == 'serve' else ' ' + command}",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "make-synth-bag":
        parser.add_argument("out", help="bag folder to create (must not exist)")
        parser.add_argument("--frames", type=int, default=50)
        parser.add_argument("--scene-every", type=int, default=25)
        parser.add_argument("--speed", type=float, default=0.4, help="metres per frame")
        parser.add_argument("--azimuth-steps", type=int, default=1024)
        parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--bad-frames", default="",
                            help="e.g. '7:empty,8:nan' (frames to break, for testing)")
        return parser
    _common(parser)
    if command == "serve":
        parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
        parser.add_argument("--open-browser", action="store_true")
        parser.add_argument("--no-carry", action="store_true",
                            help="do not carry clicks to the next frame")
        parser.add_argument("--order", choices=("auto", "source", "triage"), default="auto",
                            help="frame order (auto: triage rank when triage.csv exists)")
    else:
        parser.add_argument("--no-progress", action="store_true")
    return parser


def _default_folder(source: list[str]) -> Path:
    first = Path(source[0]).expanduser().resolve()
    name = first.stem if first.is_file() else first.name
    if name == "velodyne":
        name = first.parent.name
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".") or "input"
    return Path("annotations") / safe


def _source_from_session(folder: Path) -> tuple[str | list | None, str | None]:
    path = folder / "session.json"
    if not path.is_file():
        return None, None, None
    stored = json.loads(path.read_text())
    source, relative = stored.get("source"), stored.get("source_relative")
    stored_range = stored.get("max_range")
    if isinstance(source, str) and not Path(source).exists() and relative:
        candidate = (folder / relative).resolve()
        if candidate.exists():
            source = str(candidate)
    return source, stored.get("topic"), stored_range


def _resolve(args) -> tuple[object, Path]:
    """(source path(s) or None, session folder)."""
    if args.source:
        source = [str(Path(s).expanduser().resolve()) for s in args.source]
        source = source[0] if len(source) == 1 else source
        folder = Path(args.session) if args.session else _default_folder(args.source)
        return source, folder
    if not args.session:
        raise SystemExit("npiseg-annotate: give a SOURCE (bag, velodyne/ folder, cloud files) or "
                         "--session DIR of an earlier session")
    folder = Path(args.session)
    source, topic, stored_range = _source_from_session(folder)
    if source is None:
        raise SystemExit(f"npiseg-annotate: {folder} has no session.json; give a SOURCE")
    if args.topic is None:
        args.topic = topic
    if args.max_range is None:
        args.max_range = stored_range
    return source, folder


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    args = _parser(command).parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if command == "make-synth-bag":
        return _make_bag(args)
    source_path, folder = _resolve(args)
    from npiseg_ros.annotate.workspace import Workspace, load_shipped_session

    try:
        session, checkpoint = load_shipped_session(args.checkpoint, args.device, args.samples)
    except (SourceError, ValueError) as error:
        print(f"npiseg-annotate: error: {error}", file=sys.stderr)
        return 2
    print(f"npiseg-annotate: model {checkpoint}", flush=True)
    source, problem = None, ""
    try:
        source = open_source(source_path, args.topic)
    except SourceError as error:
        problem = str(error)
        print(f"npiseg-annotate: error: {problem}", file=sys.stderr, flush=True)
    if command == "triage":
        if source is None:
            return 2
        from npiseg_ros.annotate.triage import run_triage

        rows = run_triage(source, session, folder, progress=not args.no_progress,
                          max_range=args.max_range,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
        best = sorted((r for r in rows if r["rank"] != ""), key=lambda r: r["rank"])[:5]
        print(f"npiseg-annotate triage: {len(rows)} frames -> {folder / 'triage.csv'}, "
              f"{folder / 'triage.png'}; look first at: "
              + ", ".join(f"{r['frame']} ({r['score']})" for r in best), flush=True)
        return 0
    from npiseg_ros.annotate.server import serve

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    workspace = Workspace(session, folder, source, source_path=source_path, topic=args.topic,
                          carry=not args.no_carry, order=args.order,
                          max_range=args.max_range, log=log)
    if problem:
        workspace.fail(f"{problem}\n(open another input below; the tool keeps running)")
    serve(workspace, args.port, open_browser=args.open_browser)
    return 0


def _make_bag(args) -> int:
    from npiseg_ros.annotate.synthdrive import write_synthetic_bag

    bad = {}
    for item in filter(None, args.bad_frames.split(",")):
        index, _, kind = item.partition(":")
        if kind not in ("empty", "nan") or not index.isdigit():
            print(f"npiseg-annotate: --bad-frames item {item!r}: use N:empty or N:nan",
                  file=sys.stderr)
            return 2
        bad[int(index)] = kind
    if Path(args.out).exists():
        print(f"npiseg-annotate: {args.out} exists; give a new folder", file=sys.stderr)
        return 2
    path = write_synthetic_bag(args.out, args.frames, storage=args.storage,
                               scene_every=args.scene_every, speed=args.speed,
                               azimuth_steps=args.azimuth_steps, seed=args.seed, bad_frames=bad)
    print(f"npiseg-annotate: wrote {args.frames} frames to {path} (topic /velodyne_points, /tf)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
