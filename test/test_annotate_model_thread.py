"""npiseg-annotate's model thread (``annotate/model_thread.py``): every model call of the tool on
one long-lived thread, one at a time; errors reach the caller; the wait-policy default leaves a
user's own OpenMP setting alone."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from npiseg_ros.annotate import cli
from npiseg_ros.annotate.model_thread import ModelThread


def test_calls_run_on_one_thread_in_order_and_return_or_raise():
    worker = ModelThread()
    try:
        seen: list[int] = []
        callers = [threading.Thread(target=lambda: seen.append(worker.run(threading.get_ident)))
                   for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert len(seen) == 4 and len(set(seen)) == 1 and seen[0] != threading.get_ident()
        assert worker.run(lambda a, b=0: a + b, 2, b=3) == 5
        with pytest.raises(ValueError, match="bad cloud"):
            worker.run(lambda: (_ for _ in ()).throw(ValueError("bad cloud")))
        # a call made from the model thread runs at once instead of waiting for itself
        assert worker.run(lambda: worker.run(lambda: "inner")) == "inner"
        # serialised: two callers never overlap on the model
        busy, overlaps = threading.Lock(), []

        def job():
            if not busy.acquire(blocking=False):
                overlaps.append(1)
                return
            threading.Event().wait(0.01)
            busy.release()
        callers = [threading.Thread(target=worker.run, args=(job,)) for _ in range(6)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert overlaps == []
    finally:
        worker.close()


@pytest.mark.parametrize("given, expected", [
    ({}, {"GOMP_SPINCOUNT": cli.SPIN_COUNT}),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ({"GOMP_SPINCOUNT": "0"}, {"GOMP_SPINCOUNT": "0"}),
])
def test_default_wait_policy_respects_the_users_choice(monkeypatch, given, expected):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    cli._default_openmp_wait()
    assert {name: os.environ[name] for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
            if name in os.environ} == expected


def test_workspace_runs_decodes_and_encodes_on_its_model_thread(tmp_path):
    pytest.importorskip("rosbags")
    from npiseg_ros.annotate.session import load_shipped_session
    from npiseg_ros.annotate.sources import open_source
    from npiseg_ros.annotate.synthdrive import write_synthetic_bag
    from npiseg_ros.annotate.workspace import Workspace
    from npiseg_ros.resources import shipped_checkpoint
    if not shipped_checkpoint():
        pytest.skip("no shipped checkpoint")
    bag = write_synthetic_bag(tmp_path / "bag", 2, azimuth_steps=128)
    worker = ModelThread()
    session = worker.run(load_shipped_session, num_samples=2)[0]
    threads: list[tuple[str, int]] = []
    for name in ("predict", "set_cloud", "encode"):
        original = getattr(session, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            threads.append((_name, threading.get_ident()))
            return _original(*args, **kwargs)
        setattr(session, name, spy)
    ws = Workspace(session, tmp_path / "s", open_source(bag), source_path=str(bag),
                   log=lambda m: None, model_thread=worker)
    xyz = ws.frame.xyz
    ws.click(point_index=int(np.nanargmax(np.where(np.isfinite(xyz[:, 2]), xyz[:, 2], -np.inf))))
    ws.lookahead._encode_job()()  # what the background thread runs to encode ahead
    ws.step(1)
    names = {name for name, _ in threads}
    assert {"predict", "set_cloud", "encode"} <= names, names
    model_ident = worker.run(threading.get_ident)
    assert {ident for _, ident in threads} == {model_ident}
    worker.close()
