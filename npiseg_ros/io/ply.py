"""Minimal PLY reader / writer for point clouds (vertex element), ASCII and binary LE / BE."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from npiseg_ros.io.errors import DatasetFormatError

__all__ = ["read_ply", "write_ply", "write_ply_stream"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int",
                 "u4": "uint", "f4": "float", "f8": "double"}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _parse_header(data: bytes, path: Path) -> tuple[str, list[tuple[str, int, list]], int]:
    """(format, elements [(name, count, [(prop, dtype or None for lists)])], body offset)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DatasetFormatError(f"{path}: not a PLY file (no 'ply' magic or no 'end_header')")
    newline = data.find(b"\n", end)
    body_offset = len(data) if newline < 0 else newline + 1
    fmt = None
    elements: list[tuple[str, int, list]] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], None))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise DatasetFormatError(f"{path}: unknown PLY property line {line!r}")
    if fmt not in _FORMATS:
        raise DatasetFormatError(
            f"{path}: PLY format {fmt!r} unsupported; expected one of {list(_FORMATS)}")
    return fmt, elements, body_offset


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the ``vertex`` element of a PLY file.

    Args:
        path: PLY file (ASCII, binary_little_endian or binary_big_endian).

    Returns:
        property name -> (N,) array in the file's dtype (native byte order).

    Raises:
        DatasetFormatError: not a PLY, no vertex element, truncated data, or a list property
            before the vertex element of a binary file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    data = path.read_bytes()
    fmt, elements, offset = _parse_header(data, path)
    skip_rows = 0
    for name, count, props in elements:
        if name == "vertex":
            break
        if fmt != "ascii":
            raise DatasetFormatError(
                f"{path}: element {name!r} precedes 'vertex' in a binary PLY; reorder it")
        skip_rows += count
    else:
        raise DatasetFormatError(f"{path}: no 'vertex' element in the PLY header")
    if any(dtype is None for _, dtype in props):
        raise DatasetFormatError(f"{path}: list properties in the vertex element are unsupported")
    if fmt == "ascii":
        lines = data[offset:].decode("ascii", errors="replace").splitlines()
        rows = [line for line in lines if line.strip()][skip_rows:skip_rows + count]
        tokens = " ".join(rows).split()
        if len(rows) < count or len(tokens) != count * len(props):
            raise DatasetFormatError(
                f"{path}: ASCII PLY declares {count} vertices x {len(props)} properties but the "
                f"body holds {len(rows)} rows / {len(tokens)} values (truncated or malformed)")
        try:
            table = np.array(tokens, dtype=np.float64).reshape(count, len(props))
        except ValueError as error:
            raise DatasetFormatError(f"{path}: non-numeric value in ASCII PLY ({error})") from None
        return {name: table[:, i].astype(dtype) for i, (name, dtype) in enumerate(props)}
    order = _FORMATS[fmt]
    dtype = np.dtype([(name, order + code) for name, code in props])
    needed = count * dtype.itemsize
    if len(data) - offset < needed:
        raise DatasetFormatError(
            f"{path}: binary PLY declares {count} vertices ({needed} bytes) but only "
            f"{len(data) - offset} bytes follow the header: the file is truncated")
    table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return {name: table[name].astype(table[name].dtype.newbyteorder("="))
            for name, _ in props}


def _columns(fields: dict[str, np.ndarray]) -> tuple[list[tuple[str, np.ndarray, str]], int]:
    """[(name, (N,) values in a PLY-representable dtype, numpy type code)], N."""
    arrays = []
    count = None
    for name, values in fields.items():
        values = np.asarray(values).reshape(-1)
        if values.dtype == np.bool_:
            values = values.astype(np.uint8)
        elif values.dtype == np.int64:
            values = values.astype(np.int32)
        elif values.dtype == np.uint64:
            values = values.astype(np.uint32)
        code = values.dtype.str[1:]
        if code not in _NUMPY_TO_PLY:
            raise DatasetFormatError(f"field {name!r}: dtype {values.dtype} has no PLY type")
        if count is not None and len(values) != count:
            raise DatasetFormatError(
                f"field {name!r} has {len(values)} values, the others {count}")
        count = len(values)
        arrays.append((name, values, code))
    if count is None:
        raise DatasetFormatError("write_ply needs at least one field")
    return arrays, count


def write_ply_stream(stream: BinaryIO, fields: dict[str, np.ndarray], *, binary: bool = True,
                     big_endian: bool = False, comments: Sequence[str] = ()) -> None:
    """Write a vertex-only PLY into an open binary file (arguments of :func:`write_ply`)."""
    _write_columns(stream, *_columns(fields), binary=binary, big_endian=big_endian,
                   comments=comments)


def _write_columns(stream: BinaryIO, arrays: list[tuple[str, np.ndarray, str]], count: int, *,
                   binary: bool, big_endian: bool, comments: Sequence[str]) -> None:
    fmt = "ascii" if not binary else ("binary_big_endian" if big_endian
                                      else "binary_little_endian")
    header = ["ply", f"format {fmt} 1.0", *(f"comment {text}" for text in comments),
              f"element vertex {count}"]
    header += [f"property {_NUMPY_TO_PLY[code]} {name}" for name, _, code in arrays]
    header.append("end_header")
    stream.write(("\n".join(header) + "\n").encode("ascii"))
    if binary:
        order = ">" if big_endian else "<"
        table = np.empty(count, dtype=[(n, order + c) for n, _, c in arrays])
        for name, values, _ in arrays:
            table[name] = values
        stream.write(table.tobytes())
    else:
        columns = [v.astype(object) if v.dtype.kind in "iu" else
                   np.char.mod("%.9g" if c == "f4" else "%.17g", v) for _, v, c in arrays]
        lines = [" ".join(str(c[i]) for c in columns) for i in range(count)]
        stream.write(("\n".join(lines) + ("\n" if lines else "")).encode("ascii"))


def write_ply(path: str | os.PathLike, fields: dict[str, np.ndarray], *,
              binary: bool = True, big_endian: bool = False,
              comments: Sequence[str] = ()) -> None:
    """Write a vertex-only PLY.

    Args:
        path: output file; parent folders are created.
        fields: property name -> (N,) array, written in order with its dtype (bool -> uchar,
            int64 -> int, float64 -> double).
        binary: binary (default) or ASCII.
        big_endian: for binary files, big-endian instead of little-endian.
        comments: ``comment`` lines of the header (ASCII, no newlines).
    """
    columns = _columns(fields)  # checked before the file is created
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        _write_columns(stream, *columns, binary=binary, big_endian=big_endian,
                       comments=comments)
