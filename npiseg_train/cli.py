"""``npiseg-train``: train NPISeg3D from a YAML config (single process or under torchrun).

    npiseg-train --config config/train_joint.yaml [--resume runs/joint] [--max-steps N]
                 [--init checkpoints/npiseg_prior.safetensors]
                 [--out DIR] [--time-limit-min M] [--export checkpoints/model.safetensors]
    torchrun --nproc_per_node 2 -m npiseg_train.cli --config ...      # DDP (gloo on CPU)

argparse stays here; the library receives a ``TrainConfig`` and plain keyword arguments.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from npiseg_ros.core.errors import NPISegError
from npiseg_train.config import load_config
from npiseg_train.distributed import init_distributed, shutdown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npiseg-train",
                                     description="Train NPISeg3D (RITM clicks, ELBO loss).")
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--resume", help="run folder (or its checkpoint/) to continue from")
    parser.add_argument("--max-steps", type=int,
                        help="stop at this step; also the schedule length unless resuming")
    parser.add_argument("--out", help="run folder (default: run.out of the config)")
    parser.add_argument("--time-limit-min", type=float,
                        help="stop (with a checkpoint) after this many minutes of training")
    parser.add_argument("--init", help="model checkpoint whose weights start a new run "
                        "(fine-tuning; overrides run.init_from; ignored with --resume)")
    parser.add_argument("--export", help="copy the final model-only checkpoint here")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 on bad input, with the reason)."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
        stop_at = None
        if args.max_steps is not None:
            if args.resume:
                # the LR drop and KL ramp keep the schedule the run started with
                stop_at = args.max_steps
            else:
                config = config.replace_run(max_steps=args.max_steps)
        if args.init:
            config = config.replace_run(init_from=args.init)
        if args.resume and config.run.init_from:
            config = config.replace_run(init_from="")  # the run's own state is loaded instead
        out = Path(args.out or config.run.out)
        context = init_distributed(config.run.device)
    except (NPISegError, ValueError, OSError) as error:
        print(f"npiseg-train: error: {error}", file=sys.stderr)
        return 2
    from npiseg_train.trainer import Trainer

    if config.run.threads > 0:
        torch.set_num_threads(config.run.threads)
    try:
        trainer = Trainer(config, out, context, show_progress=not args.no_progress)
        if args.resume:
            trainer.resume(args.resume)
        elif config.run.init_from and context.is_main:
            changed = ", ".join(f"{name} {old!r} -> {new!r}"
                                for name, (old, new) in trainer.init_differences.items())
            print(f"npiseg-train: weights from {config.run.init_from}"
                  + (f" (config changed: {changed})" if changed else ""), flush=True)
        if context.is_main:
            print(f"npiseg-train: {out} from step {trainer.step}, backend {trainer.backend}, "
                  f"{context.world_size} process(es) on {context.device}", flush=True)
        start = time.perf_counter()
        trainer.train(max_steps=stop_at,
                      time_limit_s=None if args.time_limit_min is None
                      else 60.0 * args.time_limit_min)
        if context.is_main:
            print(f"npiseg-train: step {trainer.step} after "
                  f"{time.perf_counter() - start:.0f} s; model {out / 'model.safetensors'}")
            if args.export:
                Path(args.export).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / "model.safetensors", args.export)
                print(f"npiseg-train: exported {args.export}")
    except (NPISegError, ValueError, OSError) as error:
        print(f"npiseg-train: error: {error}", file=sys.stderr)
        return 2
    finally:
        shutdown(context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
