"""Two CPU processes under torchrun (gloo) train a few DDP steps and stay identical.

The test launches ``python -m torch.distributed.run --nproc_per_node 2`` on this file; in
the workers (``--worker``) each rank trains on its own scenes and dumps its weights.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER_STEPS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(data_root: str, out: str) -> None:
    import torch
    from safetensors.torch import save_file

    from npiseg_train.distributed import init_distributed, shutdown
    from npiseg_train.trainer import Trainer
    from test_train import tiny_config

    torch.set_num_threads(1)
    context = init_distributed("cpu")
    config = tiny_config(Path(data_root), Path(out), max_steps=WORKER_STEPS)
    trainer = Trainer(config, out, context, show_progress=False)
    batch = trainer.prepare(0)  # what this rank trains on first
    rows = trainer.train()
    state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{context.rank}.safetensors"))
    (Path(out) / f"rank{context.rank}.json").write_text(json.dumps({
        "world_size": context.world_size, "steps": trainer.step,
        "losses": [r["loss"] for r in rows],
        "first_batch_sum": float(sum(np.abs(p.scene.xyz).sum() for p in batch))}))
    shutdown(context)


def test_two_gloo_processes_keep_identical_replicas(tmp_path):
    from safetensors.torch import load_file
    import torch

    from npiseg_ros.core.build import build_model
    from test_train import write_box_scenes

    data = write_box_scenes(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    test_dir = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(test_dir.parent), str(test_dir), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(Path(__file__).resolve()), "--worker", str(data), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["steps"] == WORKER_STEPS for r in reports)
    # the ranks saw different data, so only gradient averaging can keep them equal
    assert reports[0]["first_batch_sum"] != reports[1]["first_batch_sum"]
    weights = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"replicas differ in {name}"
    # and training did move them away from the shared initialisation
    from test_train import tiny_config

    torch.manual_seed(0)
    initial = build_model(tiny_config(data, out).model.model_config()).state_dict()
    moved = [n for n in initial if n in weights[0] and initial[n].is_floating_point()
             and not torch.equal(initial[n], weights[0][n])]
    assert moved


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], sys.argv[3])
