"""io.autosave: atomic autosave round trip, fingerprints, export formats (no ROS, no torch)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from npiseg_ros.io import autosave as ann


def record(fingerprint: str = "f" * 32, n: int = 6) -> ann.AnnotationRecord:
    return ann.AnnotationRecord(
        fingerprint=fingerprint, frame_id="lidar",
        clicks=(ann.ClickRecord((1.0, 2.0, 3.0), 1, 4), ann.ClickRecord((0.5, 0.0, 0.0), 0, 2)),
        active_object=1, labels=np.array([0, 1, 1, -1, 1, 0][:n], np.int32),
        uncertainty=np.linspace(0, 1, n).astype(np.float32), decoded_at=(0, 1, 2))


def test_fingerprint_depends_on_content_only():
    xyz = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    assert ann.cloud_fingerprint(xyz) == ann.cloud_fingerprint(xyz.astype(np.float64))
    moved = xyz.copy()
    moved[7, 2] += 1e-3
    assert ann.cloud_fingerprint(moved) != ann.cloud_fingerprint(xyz)
    assert ann.cloud_fingerprint(xyz[:49]) != ann.cloud_fingerprint(xyz)


def test_autosave_round_trip(tmp_path):
    path = ann.write_autosave(tmp_path / "auto", record())
    assert path == ann.autosave_path(tmp_path / "auto", "f" * 32)
    loaded = ann.load_autosave(tmp_path / "auto", "f" * 32)
    assert loaded.clicks == record().clicks and loaded.decoded_at == (0, 1, 2)
    np.testing.assert_array_equal(loaded.labels, record().labels)
    assert ann.load_autosave(tmp_path / "auto", "0" * 32) is None
    # No temporary files are left behind.
    assert [p.name for p in (tmp_path / "auto").iterdir()] == [path.name]


def test_autosave_replaces_atomically_and_survives_a_failed_write(tmp_path, monkeypatch):
    ann.write_autosave(tmp_path, record())

    def broken_fsync(_):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ann.write_autosave(tmp_path, record())
    monkeypatch.undo()
    assert ann.load_autosave(tmp_path, "f" * 32).clicks == record().clicks
    assert len(list(tmp_path.iterdir())) == 1


def test_corrupt_autosave_raises_value_error(tmp_path):
    ann.autosave_path(tmp_path, "e" * 32).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read autosave"):
        ann.load_autosave(tmp_path, "e" * 32)


def test_export_formats(tmp_path):
    rec = record()
    xyz = np.arange(18, dtype=np.float32).reshape(6, 3)
    labels, uncertainty = rec.labels, rec.uncertainty
    npz = ann.save_annotation(tmp_path / "a.npz", "npz", xyz, labels, uncertainty, rec.clicks)
    with np.load(npz) as data:
        np.testing.assert_array_equal(data["labels"], labels)
        np.testing.assert_array_equal(data["clicks"][0], [1, 2, 3, 1, 4])
    raw = np.fromfile(ann.save_annotation(tmp_path / "a.label", "label", xyz, labels,
                                          uncertainty), dtype="<u4")
    np.testing.assert_array_equal(raw & 0xFFFF, [0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(raw >> 16, [0, 1, 1, 0, 1, 0])
    ply = ann.save_annotation(tmp_path / "sub" / "a.ply", "ply", xyz, labels, uncertainty)
    data = ply.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    assert b"element vertex 6" in header and b"property int label" in header
    vertices = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("label", "<i4"), ("uncertainty", "<f4")])
    np.testing.assert_array_equal(vertices["label"], labels)
    np.testing.assert_array_equal(vertices["z"], xyz[:, 2])


def test_format_from_path():
    assert ann.format_from_path("x/a.PLY") == "ply"
    assert ann.format_from_path("x/a.bin", "label") == "label"
    with pytest.raises(ValueError, match="unknown annotation format"):
        ann.format_from_path("a.txt")
