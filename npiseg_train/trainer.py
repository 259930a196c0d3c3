"""The training loop: RITM clicks, ELBO loss, AdamW, validation, CSV/PNG logs, exact resume.

One optimiser step = ``batch_size`` scenes per process: one backbone pass over the batch, per
scene 0..N simulated corrective rounds without gradient on the detached embedding, then one
decode with gradient whose latents come from the posterior (``NPISeg3D.train_forward``),
paper Eq. 9-10.
"""
from __future__ import annotations

import copy
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from npiseg_ros.core.backbone import build_backbone
from npiseg_ros.core.build import build_model
from npiseg_ros.core.checkpoint import init_weights_from, save_checkpoint
from npiseg_ros.core.model import NPISeg3D
from npiseg_ros.core.scene import VoxelClicks
from npiseg_ros.core.sparse.backends import available_backends
from npiseg_train.clicks import ClickSample, choose_targets, corrective_rounds, random_clicks
from npiseg_train.config import TrainConfig
from npiseg_train.data import SceneStream, TrainScene
from npiseg_train.distributed import (DistributedContext, average_buffers, barrier, mean_across,
                                      wrap_module)
from npiseg_train.losses import KLRamp, click_distance_weights, npiseg_loss
from npiseg_train.scalars import ScalarLog, plot_curves
from npiseg_train.state import load_training_state, save_training_state
from npiseg_train.validation import validate, validation_samples

TRAIN_FIELDS = ["step", "loss", "seg", "kl_scene", "kl_objects", "kl_weight", "lr",
                "grad_norm", "voxels", "objects", "clicks", "rounds", "seconds"]
VAL_FIELDS = ["step", "folder", "num_samples", "IoU@1", "IoU@2", "IoU@3", "IoU@5", "IoU@10",
              "NoC@80", "NoC@85", "NoC@90", "seconds"]


@dataclass
class PreparedScene:
    """A training scene with its sampled targets, initial clicks and corrective-round count."""

    scene: TrainScene
    sample: ClickSample
    rounds: int


def use_backend(model: NPISeg3D, request: str = "auto") -> str:
    """Rebuild the backbone on the requested sparse backend; ``auto`` picks spconv when it is
    installed (same parameters, ~3x faster on CPU here) and returns the backend used.

    Checkpoints are backend-free: the node and evaluation load them with the default backend.
    """
    if request == "torch" or (request == "auto" and "spconv" not in available_backends()):
        return "torch"
    config = model.config
    state = model.backbone.state_dict()
    model.backbone = build_backbone(config.backbone, config.in_channels, config.hidden_dim,
                                    backend="spconv")
    model.backbone.load_state_dict(state)
    return "spconv"


def parameter_groups(model: NPISeg3D, optim: Any) -> list[dict[str, Any]]:
    """AdamW groups: everything at ``optim.lr``; the geodesic prior's scalars at
    ``lr * optim.prior_lr_scale`` without weight decay (decay would pull the gate to 0)."""
    scalars = [p for p in model.prior.parameters() if p.ndim == 0] if model.prior else []
    chosen = {id(p) for p in scalars}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    groups = [{"params": rest}]
    if scalars:
        groups.append({"params": scalars, "lr": optim.lr * optim.prior_lr_scale,
                       "weight_decay": 0.0})
    return groups


class ScenesLoss(nn.Module):
    """Everything with gradient in one ``forward`` (so DDP can wrap it): loss of a batch."""

    def __init__(self, model: NPISeg3D, corrective_policy: str = "model", *,
                 free_bits: float = 0.0, best_of_samples: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.corrective_policy = corrective_policy
        self.free_bits = free_bits
        self.best_of_samples = best_of_samples

    def forward(self, batch: list[PreparedScene], kl_weight: float, num_samples: int,
                generator: torch.Generator,
                class_balance: float = 0.0) -> tuple[Tensor, dict[str, float]]:
        device = next(self.model.parameters()).device
        features = torch.cat([torch.from_numpy(p.scene.features) for p in batch]).to(device)
        coords = torch.cat([
            torch.cat([torch.full((p.scene.num_voxels, 1), index, dtype=torch.int64),
                       torch.from_numpy(p.scene.coords)], dim=1)
            for index, p in enumerate(batch)]).to(device)
        xyz = torch.cat([torch.from_numpy(p.scene.xyz) for p in batch]).to(device)
        scenes = self.model.embed_batch(features, coords, xyz, [p.scene.graph for p in batch])
        total = xyz.new_zeros(())
        logs = {"seg": 0.0, "kl_scene": 0.0, "kl_objects": 0.0, "rounds": 0.0, "clicks": 0.0}
        for prepared, scene in zip(batch, scenes):
            sample = corrective_rounds(self.model, scene, prepared.scene.xyz, prepared.sample,
                                       prepared.rounds, generator, self.corrective_policy)
            targets = torch.from_numpy(sample.targets).to(device)
            click_voxels = torch.from_numpy(sample.click_voxels).to(device)
            previous = (None if sample.previous_labels is None
                        else torch.from_numpy(sample.previous_labels).to(device))
            clicks = VoxelClicks(click_voxels, torch.from_numpy(sample.click_labels).to(device))
            output = self.model.train_forward(scene, clicks, targets, previous,
                                              num_samples=num_samples, generator=generator)
            voxel_xyz = torch.from_numpy(prepared.scene.xyz).to(device)
            weights = click_distance_weights(voxel_xyz, voxel_xyz[click_voxels])
            terms = npiseg_loss(output, targets, weights, kl_weight, class_balance,
                                free_bits=self.free_bits,
                                best_of_samples=self.best_of_samples)
            total = total + terms.total / len(batch)
            for key, value in (("seg", terms.segmentation), ("kl_scene", terms.kl_scene),
                               ("kl_objects", terms.kl_objects)):
                logs[key] += float(value) / len(batch)
            logs["rounds"] += sample.rounds / len(batch)
            logs["clicks"] += len(sample.click_voxels) / len(batch)
        return total, logs


class Trainer:
    """Owns the model, optimiser, scheduler, data stream, logs and checkpoints of one run.

    Args:
        config: the training config.
        out: run folder (``checkpoint/``, ``train.csv``, ``val.csv``, ``curves.png``,
            ``model.safetensors`` = the latest model alone, for ``npiseg-eval`` / the node).
        context: distributed placement (default: single CPU process).
        show_progress: tqdm bar on rank 0.
    """

    def __init__(self, config: TrainConfig, out: str | Path,
                 context: DistributedContext | None = None, show_progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.context = context or DistributedContext()
        self.show_progress = show_progress
        torch.manual_seed(config.run.seed)  # identical initial weights on every rank
        self.model = build_model(config.model.model_config())
        self.init_differences: dict[str, tuple[Any, Any]] = {}
        if config.run.init_from:
            # fine-tuning: weights only, which must fit exactly; config fields that change no
            # parameter (decode_stride, ...) may differ and are reported
            self.init_differences = init_weights_from(self.model, config.run.init_from)
        self.backend = use_backend(self.model, config.run.sparse_backend)
        self.model.to(self.context.device).train()
        # the averaged weights (optim.ema_decay > 0): a copy of the model updated after every
        # optimiser step; it is what the run exports and validates
        self.ema_model = (copy.deepcopy(self.model).eval().requires_grad_(False)
                          if config.optim.ema_decay > 0 else None)
        self.loss_module = wrap_module(
            ScenesLoss(self.model, config.clicks.corrective_policy,
                       free_bits=config.optim.free_bits,
                       best_of_samples=config.optim.best_of_samples), self.context)
        optim = config.optim
        self.optimiser = torch.optim.AdamW(parameter_groups(self.model, optim),
                                           lr=optim.lr, weight_decay=optim.weight_decay)
        self.step = 0
        self.elapsed_s = 0.0  # training seconds across resumes (the cosine schedule's clock)
        if optim.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimiser, self._lr_factor)
        else:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimiser,
                                                                  [self._drop_step()],
                                                                  gamma=optim.lr_drop_factor)
        self.kl_ramp = KLRamp(optim.kl_start, optim.kl_end, config.run.max_steps)
        model_config = self.model.config
        self.stream = SceneStream(config.data, voxel_size=model_config.voxel_size,
                                  input_mode=model_config.input_mode,
                                  graph_config=(model_config.graph_config()
                                                if model_config.geodesic_prior else None))
        self.train_log = ScalarLog(self.out / "train.csv", TRAIN_FIELDS)
        self.val_log = ScalarLog(self.out / "val.csv", VAL_FIELDS)
        self._val_samples: dict[str, list] | None = None

    def progress(self) -> float:
        """Fraction of the run done: steps / max_steps, or training time / time budget."""
        done = self.step / max(self.config.run.max_steps, 1)
        budget = 60.0 * self.config.run.time_budget_min
        if budget > 0:
            done = max(done, self.elapsed_s / budget)
        return min(done, 1.0)

    def _lr_factor(self, _: int) -> float:
        floor = self.config.optim.min_lr_factor
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * self.progress()))

    def _kl_weight(self) -> float:
        if self.config.optim.schedule == "cosine":
            optim = self.config.optim
            return optim.kl_start + (optim.kl_end - optim.kl_start) * self.progress()
        return self.kl_ramp(self.step)

    def _drop_step(self) -> int:
        """The step at which the learning rate drops (``optim.lr_drop_fraction``)."""
        fraction = self.config.optim.lr_drop_fraction
        return max(1, int(round(fraction * self.config.run.max_steps)))

    def update_ema(self) -> None:
        """ema = d * ema + (1 - d) * weights, d = min(ema_decay, (1 + n) / (10 + n)) at the
        n-th update (n = step - 1); integer buffers are copied."""
        if self.ema_model is None:
            return
        n = self.step - 1
        decay = min(self.config.optim.ema_decay, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            for average, current in zip(self.ema_model.state_dict().values(),
                                        self.model.state_dict().values()):
                if average.is_floating_point():
                    average.mul_(decay).add_(current.detach(), alpha=1.0 - decay)
                else:
                    average.copy_(current)

    @property
    def export_model(self) -> NPISeg3D:
        """The weights a run exports and validates: the EMA when enabled, else the model."""
        return self.model if self.ema_model is None else self.ema_model

    # ------------------------------------------------------------------ state
    def save(self) -> Path:
        """Checkpoint (rank 0) the full training state and export the bare model."""
        path = self.out / "checkpoint"
        if self.context.is_main:
            metadata = self._metadata()
            save_training_state(path, self.model, self.optimiser, self.scheduler, self.step,
                                self.config.to_dict(), metadata,
                                {"elapsed_s": self.elapsed_s}, ema_model=self.ema_model)
            save_checkpoint(self.out / "model.safetensors", self.export_model,
                            {**metadata, "step": self.step,
                             "weights": "ema" if self.ema_model is not None else "last"})
            plot_curves(self.train_log, self.val_log, self.out / "curves.png")
        barrier(self.context)
        return path

    def resume(self, directory: str | Path) -> None:
        """Continue from a checkpoint folder (``<run>/checkpoint`` or the run folder)."""
        directory = Path(directory)
        if (directory / "checkpoint").is_dir():
            directory = directory / "checkpoint"
        state = load_training_state(directory, self.model, self.optimiser, self.scheduler,
                                    ema_model=self.ema_model)
        self.step = int(state["step"])
        self.elapsed_s = float(state.get("extra", {}).get("elapsed_s", 0.0))
        # The schedule follows this config's max_steps (identical when it is unchanged), so a
        # run can be extended by resuming with a larger run.max_steps.
        if isinstance(self.scheduler, torch.optim.lr_scheduler.MultiStepLR):
            self.scheduler.milestones = Counter([self._drop_step()])
        if self.context.is_main:
            self.train_log.truncate_after(self.step)
            self.val_log.truncate_after(self.step)

    def _metadata(self) -> dict[str, Any]:
        return {"trainer": "npiseg_train", "config": self.config.to_dict(),
                "world_size": self.context.world_size, "sparse_backend": self.backend}

    # ------------------------------------------------------------------ steps
    def prepare(self, step: int) -> list[PreparedScene]:
        """The batch of ``step`` for this rank: scenes, targets, initial clicks, round counts.

        Scenes without a usable target (e.g. one object fills the crop) are replaced by the
        next slot's scene, so the batch size stays fixed.
        """
        clicks = self.config.clicks
        batch: list[PreparedScene] = []
        slot = 0
        size = self.config.run.batch_size
        while len(batch) < size:
            scene, rng = self.stream.scene(step, self.context.rank, slot,
                                           self.context.world_size, size)
            slot += 1
            targets = choose_targets(scene.labels, scene.xyz, rng,
                                     max_objects=clicks.max_objects,
                                     min_voxels=self.config.data.min_object_voxels,
                                     things=scene.things,
                                     thing_fraction=self.config.data.thing_fraction)
            if targets is None:
                continue
            voxels, labels = random_clicks(scene.xyz, targets, rng,
                                           max_positive=clicks.max_positive,
                                           max_negative=clicks.max_negative)
            rounds = int(rng.integers(0, clicks.max_corrective_rounds + 1))
            batch.append(PreparedScene(scene, ClickSample(targets, voxels, labels), rounds))
        return batch

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the logged scalars (averaged over ranks)."""
        start = time.perf_counter()
        batch = self.prepare(self.step)
        seed = np.random.SeedSequence([self.config.run.seed, self.step, self.context.rank, 7])
        generator = torch.Generator(device=self.context.device)
        generator.manual_seed(int(seed.generate_state(1)[0]))
        kl_weight = self._kl_weight()
        loss, logs = self.loss_module(batch, kl_weight, self.config.clicks.num_samples,
                                      generator, self.config.optim.class_balance)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        lr = self.optimiser.param_groups[0]["lr"]
        self.optimiser.step()
        self.scheduler.step()
        average_buffers(self.model, self.context)
        self.step += 1
        self.update_ema()
        self.elapsed_s += time.perf_counter() - start
        row = {"step": self.step, "loss": float(loss.detach()), **logs, "kl_weight": kl_weight,
               "lr": lr, "grad_norm": float(grad_norm),
               "voxels": float(np.mean([p.scene.num_voxels for p in batch])),
               "objects": float(np.mean([p.sample.num_objects for p in batch])),
               "seconds": time.perf_counter() - start}
        for key in ("loss", "seg", "kl_scene", "kl_objects", "grad_norm"):
            row[key] = mean_across(row[key], self.context)
        return row

    def run_validation(self) -> list[dict[str, Any]]:
        """Validate on every ``data.val_roots`` folder (rank 0); rows also go to val.csv."""
        rows: list[dict[str, Any]] = []
        if self.context.is_main and self.config.data.val_roots:
            if self._val_samples is None:
                self._val_samples = {root: validation_samples(root, self.config.data.val_samples)
                                     for root in self.config.data.val_roots}
            for root, samples in self._val_samples.items():
                start = time.perf_counter()
                summary = validate(self.export_model, samples,
                                   max_clicks=self.config.run.val_max_clicks,
                                   seed=self.config.run.seed)
                row = {"step": self.step, "folder": root, **summary,
                       "seconds": time.perf_counter() - start}
                self.val_log.append(row)
                rows.append(row)
            self.model.train()
        barrier(self.context)
        return rows

    def train(self, max_steps: int | None = None,
              time_limit_s: float | None = None) -> list[dict[str, float]]:
        """Train until ``max_steps`` (default: the config's) or the time limit; checkpoint on
        the cadence and at the end. Returns the rows logged by this call."""
        run = self.config.run
        end = run.max_steps if max_steps is None else max_steps
        started = time.perf_counter()
        history: list[dict[str, float]] = []
        bar = None
        if self.show_progress and self.context.is_main:
            from tqdm import tqdm

            bar = tqdm(total=end, initial=self.step, desc="train", unit="step")
        try:
            while self.step < end:
                row = self.train_step()
                history.append(row)
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {row}")
                if self.context.is_main and run.log_every and self.step % run.log_every == 0:
                    self.train_log.append(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", vox=int(row["voxels"]),
                                    s=f"{row['seconds']:.1f}")
                if run.val_every and self.step % run.val_every == 0:
                    for val in self.run_validation():
                        if bar is not None:
                            bar.write(f"step {self.step} {Path(val['folder']).name}: "
                                      f"IoU@1 {100 * val['IoU@1']:.1f} "
                                      f"IoU@5 {100 * val['IoU@5']:.1f} "
                                      f"NoC@85 {val['NoC@85']:.2f}")
                if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                    self.save()
                out_of_time = ((time_limit_s is not None
                                and time.perf_counter() - started > time_limit_s)
                               or self.progress() >= 1.0)
                # every rank must stop at the same step, or DDP would hang
                if mean_across(float(out_of_time), self.context) > 0:
                    break
        finally:
            if bar is not None:
                bar.close()
        if not (run.checkpoint_every and self.step % run.checkpoint_every == 0):
            self.save()
        return history
