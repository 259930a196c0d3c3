"""Minimal PCD (Point Cloud Library) reader / writer: DATA ascii and binary.

``binary_compressed`` (LZF) is not supported and raises a clear error: convert it with
``pcl_convert_pcd_ascii_binary input.pcd output.pcd 1``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npiseg_ros.io.errors import DatasetFormatError

__all__ = ["read_pcd", "write_pcd"]

_KINDS = {"I": "i", "U": "u", "F": "f"}


def read_pcd(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PCD file into field name -> (N,) array (fields with COUNT > 1 become (N, C)).

    Raises:
        DatasetFormatError: missing header keys, binary_compressed data, truncated data.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    data = path.read_bytes()
    header: dict[str, list[str]] = {}
    offset = 0
    while offset < len(data):
        newline = data.find(b"\n", offset)
        newline = len(data) if newline < 0 else newline
        line = data[offset:newline].decode("ascii", errors="replace").strip()
        offset = newline + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    for key in ("FIELDS", "SIZE", "TYPE", "DATA"):
        if key not in header:
            raise DatasetFormatError(f"{path}: PCD header has no {key} line")
    names, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
    counts = header.get("COUNT", ["1"] * len(names))
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise DatasetFormatError(f"{path}: FIELDS, SIZE, TYPE and COUNT differ in length")
    if "POINTS" in header:
        num_points = int(header["POINTS"][0])
    else:
        num_points = int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
    mode = header["DATA"][0].lower()
    fields = []
    for name, size, kind, count in zip(names, sizes, types, counts):
        if kind.upper() not in _KINDS:
            raise DatasetFormatError(f"{path}: field {name!r} has unknown TYPE {kind!r}")
        shape = (int(count),) if int(count) > 1 else ()
        fields.append((name, np.dtype(f"<{_KINDS[kind.upper()]}{int(size)}"), shape))
    if mode == "binary_compressed":
        raise DatasetFormatError(
            f"{path}: PCD 'binary_compressed' is unsupported; convert it to binary or ascii "
            "first (e.g. pcl_convert_pcd_ascii_binary in.pcd out.pcd 1)")
    if mode == "binary":
        dtype = np.dtype([(n, d, s) for n, d, s in fields])
        if len(data) - offset < num_points * dtype.itemsize:
            raise DatasetFormatError(
                f"{path}: binary PCD declares {num_points} points ({num_points * dtype.itemsize}"
                f" bytes) but {len(data) - offset} bytes follow the header: truncated")
        table = np.frombuffer(data, dtype=dtype, count=num_points, offset=offset)
        return {n: np.array(table[n]) for n, _, _ in fields}
    if mode != "ascii":
        raise DatasetFormatError(f"{path}: unknown PCD DATA mode {mode!r}")
    width = sum(int(np.prod(s)) if s else 1 for _, _, s in fields)
    tokens = data[offset:].decode("ascii", errors="replace").split()
    if len(tokens) < num_points * width:
        raise DatasetFormatError(
            f"{path}: ASCII PCD declares {num_points} points x {width} values but holds "
            f"{len(tokens)} values: truncated")
    table = np.array(tokens[:num_points * width], dtype=np.float64).reshape(num_points, width)
    out, column = {}, 0
    for name, dtype, shape in fields:
        step = shape[0] if shape else 1
        values = table[:, column:column + step]
        if dtype.kind != "f" and name in ("rgb", "rgba"):
            values = values.astype(np.uint32)
        out[name] = (values[:, 0] if not shape else values).astype(dtype)
        column += step
    return out


def write_pcd(path: str | os.PathLike, fields: dict[str, np.ndarray], *,
              binary: bool = True) -> None:
    """Write an unorganised PCD with the given (N,) fields (float / int / uint dtypes)."""
    arrays = [(n, np.asarray(v).reshape(-1)) for n, v in fields.items()]
    if not arrays:
        raise DatasetFormatError("write_pcd needs at least one field")
    count = len(arrays[0][1])
    if any(len(v) != count for _, v in arrays):
        raise DatasetFormatError("all PCD fields must have the same length")
    arrays = [(n, v.astype(np.int32) if v.dtype == np.int64 else v) for n, v in arrays]
    header = ["# .PCD v0.7", "VERSION 0.7", "FIELDS " + " ".join(n for n, _ in arrays),
              "SIZE " + " ".join(str(v.dtype.itemsize) for _, v in arrays),
              "TYPE " + " ".join({"f": "F", "i": "I", "u": "U"}[v.dtype.kind]
                                 for _, v in arrays),
              "COUNT " + " ".join("1" for _ in arrays), f"WIDTH {count}", "HEIGHT 1",
              "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {count}",
              f"DATA {'binary' if binary else 'ascii'}"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            table = np.empty(count, dtype=[(n, v.dtype.newbyteorder("<")) for n, v in arrays])
            for name, values in arrays:
                table[name] = values
            stream.write(table.tobytes())
        else:
            columns = [np.char.mod("%.9g" if v.dtype.kind == "f" else "%d", v)
                       for _, v in arrays]
            stream.write(("\n".join(" ".join(row) for row in zip(*columns)) + "\n")
                         .encode("ascii"))
