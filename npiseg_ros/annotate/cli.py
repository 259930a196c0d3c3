"""``npiseg-annotate``: browser labelling and triage of recorded LiDAR drives (no ROS needed).

    npiseg-annotate SOURCE [--topic T] [--session DIR] [--port 8765]      browser tool
    npiseg-annotate --session DIR                                          reopen a session
    npiseg-annotate triage SOURCE [--topic T] [--session DIR]              rank frames (CSV + plot)
    npiseg-annotate triage SOURCE... --out DIR [--ray] [--ray-address A]   fleet triage (parquet)
    npiseg-annotate make-synth-bag OUT [--frames 50] [--storage mcap]      synthetic test drive

SOURCE: a rosbag2 bag (folder with metadata.yaml, .db3 or .mcap), a KITTI/SemanticKITTI
sequence or velodyne/ folder, or .ply/.pcd/.npz/.bin files.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from npiseg_ros.annotate.sources import SourceError, open_source

COMMANDS = ("serve", "triage", "make-synth-bag")


def _metres(text: str) -> float:
    """argparse type of --max-range: a finite number of metres > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of metres") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite distance > 0 metres")
    return value


def _samples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value}: give 1 to 1000 samples")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="*", help="bag, velodyne/ folder, cloud file(s)")
    parser.add_argument("--topic", default=None, help="PointCloud2 topic (bags with several)")
    parser.add_argument("--session", default=None,
                        help="session folder (default: annotations/<source name>)")
    parser.add_argument("--checkpoint", default=None,
                        help="model checkpoint (default: the shipped one)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--samples", type=_samples, default=10,
                        help="Monte-Carlo samples per decode")
    parser.add_argument("--max-range", type=_metres, default=None,
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
        parser.add_argument("--carry", choices=("masks", "clicks", "off"), default="masks",
                            help="what the next frame gets from the one before: masks = each "
                                 "object tracked (its mask moved by the ego and its own "
                                 "motion, the model prompted on it; default), clicks = the "
                                 "clicks re-applied through the poses, off = nothing")
        parser.add_argument("--no-carry", action="store_true", help="same as --carry off")
        parser.add_argument("--ontology", default=None,
                            help="classes + attributes YAML (default: the session's, else "
                                 "config/ontology_semantickitti.yaml; also shipped: "
                                 "config/ontology_nuscenes.yaml)")
        parser.add_argument("--calib", default=None,
                            help="KITTI calib.txt: box exports (label_2) in the rectified "
                                 "camera frame (default: LiDAR frame)")
        parser.add_argument("--import-labels", default=None, metavar="DIR",
                            help="folder of existing labels (<frame>.label, "
                                 "<frame>_lidarseg.bin) imported for review into frames "
                                 "without an autosave; 'auto' = the sequence's labels/")
        parser.add_argument("--order", choices=("auto", "source", "triage"), default="auto",
                            help="frame order (auto: triage rank when triage.csv exists)")
    else:
        parser.add_argument("--no-progress", action="store_true")
        fleet = parser.add_argument_group(
            "fleet triage (--out): every SOURCE is its own source, the model prompts itself "
            "(docs/triage.md)")
        fleet.add_argument("--out", default=None,
                           help="output folder: triage.parquet, triage.csv, triage.png, "
                                "index.html; a re-run skips the frames already in it")
        fleet.add_argument("--ray", action="store_true",
                           help="score on a local Ray (workers = CPUs / --cpus-per-worker)")
        fleet.add_argument("--ray-address", default=None,
                           help="join a running Ray cluster (auto, HOST:6379, ray://HOST:10001)")
        fleet.add_argument("--workers", type=int, default=None,
                           help="Ray workers, one model each (default: every CPU)")
        fleet.add_argument("--cpus-per-worker", type=int, default=1)
        fleet.add_argument("--chunk-frames", type=int, default=8, help="frames per task")
        fleet.add_argument("--max-in-flight", type=int, default=None,
                           help="tasks started and not finished (default 2 per worker)")
        fleet.add_argument("--retries", type=int, default=2,
                           help="extra tries of a failed task")
        fleet.add_argument("--top", type=int, default=50, help="frames listed in index.html")
    return parser


def _default_folder(source: list[str]) -> Path:
    first = Path(source[0]).expanduser().resolve()
    name = first.stem if first.is_file() else first.name
    if name == "velodyne":
        name = first.parent.name
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".") or "input"
    return Path("annotations") / safe


def _source_from_session(folder: Path) -> tuple[str | list | None, str | None, float | None]:
    """(source, topic, --max-range) of an earlier session (checked values only)."""
    from npiseg_ros.annotate.folder import read_session_file

    stored, problems = read_session_file(folder)
    for problem in problems:
        print(f"npiseg-annotate: {problem}", file=sys.stderr, flush=True)
    if stored is None:
        return None, None, None
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


SPIN_COUNT = "100000"
"""libgomp's spin count for the tool unless the environment sets ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``: OpenMP threads spin this many times (well under a millisecond) after a
parallel region before they sleep, so a decode's hundreds of short regions do not each wait
for threads to wake, and an idle tool sleeps at once. Passive waiting (no spin) made the
median click -> labels on the bundled sweep 57-79 ms against 49-61 ms, and a frame not encoded
ahead 1.0-1.2 s against 0.65-0.7 s (``bench_annotate.py --parts clicks``, idle cores,
``docs/annotate.md``). libgomp still cuts the spin when its threads outnumber the cores."""


def _call(function, *args, **kwargs):
    return function(*args, **kwargs)


def _default_openmp_wait() -> None:
    """Set :data:`SPIN_COUNT` before PyTorch loads, unless the user chose a wait policy."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    args = _parser(command).parse_args(argv)
    _default_openmp_wait()
    if command == "make-synth-bag":
        return _make_bag(args)
    if command == "triage" and (args.out or args.ray or args.ray_address):
        return _fleet(args)
    source_path, folder = _resolve(args)
    from npiseg_ros.annotate.model_thread import ModelThread
    from npiseg_ros.annotate.session import load_shipped_session
    from npiseg_ros.annotate.workspace import Workspace

    # The server runs every model call on one thread (model_thread.py), loading included;
    # triage is a batch job on this thread, where Ctrl-C stops it at once.
    model_thread = ModelThread() if command == "serve" else None
    try:
        session, checkpoint = (model_thread.run if model_thread else _call)(
            load_shipped_session, args.checkpoint, args.device, args.samples)
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
    try:
        options = _serve_options(args, source_path)
    except ValueError as error:
        print(f"npiseg-annotate: error: {error}", file=sys.stderr, flush=True)
        return 2
    workspace = Workspace(session, folder, source, source_path=source_path, topic=args.topic,
                          order=args.order, max_range=args.max_range, log=log,
                          model_thread=model_thread, **options)
    if problem:
        workspace.fail(f"{problem}\n(open another input below; the tool keeps running)")
    serve(workspace, args.port, open_browser=args.open_browser)
    return 0


def _serve_options(args, source_path) -> dict:
    """The workspace's ontology / calib / import / carry options from the command line.

    Raises:
        ValueError: a file that cannot be used (named in the message).
    """
    from npiseg_ros.annotate.export import read_kitti_calib
    from npiseg_ros.annotate.ontology import load_ontology

    options = {"carry": "off" if args.no_carry else args.carry}
    if args.ontology:
        options["ontology"] = load_ontology(args.ontology)
    if args.calib:
        options["calib"] = read_kitti_calib(args.calib)
    if args.import_labels == "auto":
        first = Path(source_path[0] if isinstance(source_path, list) else source_path or ".")
        sequence = first.parent.parent if first.is_file() else (
            first.parent if first.name == "velodyne" else first)
        if not (sequence / "labels").is_dir():
            raise ValueError(f"--import-labels auto: no labels/ folder in {sequence}")
        options["import_labels"] = sequence / "labels"
    elif args.import_labels:
        if not Path(args.import_labels).is_dir():
            raise ValueError(f"--import-labels {args.import_labels}: not a folder")
        options["import_labels"] = args.import_labels
    return options


def _fleet(args) -> int:
    """``triage SOURCE... --out DIR``: exit 0 when every source was scored (unusable frames are
    rows with their error), 1 when a source could not be opened or a task failed after its
    retries (the rest is written), 2 on bad options or no model."""
    from npiseg_ros.annotate.fleet import run_fleet_triage

    def fail(message: str) -> int:
        print(f"npiseg-annotate triage: error: {message}", file=sys.stderr, flush=True)
        return 2

    if not args.out:
        return fail("--ray and --ray-address need --out DIR (fleet triage)")
    if args.session:
        return fail("give --out (fleet triage: the model's own prompts) or --session (carry "
                    "the clicks of a labelling session), not both")
    if not args.source:
        return fail("give one or more SOURCEs (bags, sequence folders, cloud files)")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        summary = run_fleet_triage(
            args.source, args.out, use_ray=args.ray, ray_address=args.ray_address,
            workers=args.workers, cpus_per_worker=args.cpus_per_worker,
            chunk_frames=args.chunk_frames, max_in_flight=args.max_in_flight,
            retries=args.retries, topic=args.topic, checkpoint=args.checkpoint,
            device=args.device, samples=args.samples, max_range=args.max_range, top=args.top,
            progress=not args.no_progress, log=log)
    except (RuntimeError, ValueError) as error:  # SourceError (no model) is a ValueError
        return fail(str(error))
    rate = summary.scored / summary.seconds if summary.seconds > 0 else 0.0
    memory = "/".join(f"{m:.0f}" for m in summary.peak_rss_mb)
    print(f"npiseg-annotate triage: scored {summary.scored} frame(s) in {summary.seconds:.1f} s "
          f"({rate:.2f} frames/s, {summary.workers} worker(s)"
          + (f", peak memory per worker {memory} MB" if memory else "")
          + f"); {summary.skipped} skipped (already scored)", flush=True)
    for source, error in summary.failed_sources:
        print(f"npiseg-annotate triage: source failed: {source}: {error}", flush=True)
    unusable = summary.failed_frames
    if unusable:
        print(f"npiseg-annotate triage: {len(unusable)} frame(s) unusable: "
              + "; ".join(f"{Path(r['source']).name}/{r['frame']}: {r['error']}"
                          for r in unusable[:5]), flush=True)
    best = sorted((r for r in summary.rows if r["rank"]), key=lambda r: r["rank"])[:5]
    print("npiseg-annotate triage: look first at: "
          + (", ".join(f"{Path(r['source']).name}/{r['frame']} ({r['score']:.3f})" for r in best)
             or "nothing scored")
          + f" -> {summary.out / 'triage.parquet'}, triage.csv, triage.png, index.html",
          flush=True)
    return 1 if summary.failed_sources else 0


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
