"""Which zarr data types an index records, and how: a string `np.dtype` reads back as the type zarr gives.

zarr v2 writes a numpy type string (`"<i4"`, `"<U4"`, `"|S3"`, `"<M8[ns]"`, `"|O"` with an object codec);
v3 a name (`"int32"`, `"bool"`, `"string"`) or, for types with parameters, an object:
`{"name": "fixed_length_utf32", "configuration": {"length_bytes": 16}}`, `null_terminated_bytes`, `raw_bytes`
(`length_bytes`), `numpy.datetime64` and `numpy.timedelta64` (`unit`, `scale_factor`), `structured` (`fields`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sdl.loader.errors import FormatError

V3_VARIABLE_LENGTH = ("string", "variable_length_bytes", "bytes")  # zarr gives them as numpy StringDType or object arrays
V3_WITH_LENGTH = {"fixed_length_utf32": lambda n: f"<U{n // 4}", "null_terminated_bytes": lambda n: f"|S{n}",
                  "raw_bytes": lambda n: f"|V{n}"}


def recorded_dtype(directory: Any, raw: Any) -> str:
    """The dtype an index records for zarr's `raw` data type (v2 `dtype`, v3 `data_type`): a string `np.dtype` reads
    back as what zarr gives. Numbers, bool and datetimes keep their name (`int32`, `datetime64[ns]`: what indexes have
    always recorded, so their identity stays); fixed-length strings and bytes are their type string (`<U4`, `|S3`: numpy
    does not parse their names back); variable-length strings and bytes are `object`. Other types (structured ones,
    raw bits) are refused in one line naming the array and its type."""
    if isinstance(raw, dict):  # a v3 type with parameters
        name, config = raw.get("name"), raw.get("configuration") or {}
        length, unit, scale = config.get("length_bytes"), config.get("unit"), config.get("scale_factor", 1)
        if name in V3_WITH_LENGTH and isinstance(length, int) and not isinstance(length, bool) and length > 0:
            raw = V3_WITH_LENGTH[name](length)
        elif name in ("numpy.datetime64", "numpy.timedelta64") and isinstance(unit, str) and isinstance(scale, int):
            raw = f"<{'M' if name == 'numpy.datetime64' else 'm'}8[{'' if scale == 1 else scale}{unit}]"
    elif raw in V3_VARIABLE_LENGTH:
        return "object"
    try:
        dtype = np.dtype(raw) if isinstance(raw, str) else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"{directory}: zarr data type {json.dumps(raw)[:80]}, which sdl does not read; expected numbers, "
                          "bool, datetime64/timedelta64, or strings or bytes (fixed or variable length): store each part of "
                          "a structured type as an array of its own")
    return dtype.name if numpy_parses(dtype.name) else dtype.str


def numpy_parses(name: object) -> bool:
    """Whether `name` is a dtype string numpy reads back."""
    if not isinstance(name, str):
        return False
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True
