"""The check an Arrow record batch passes before ArrowRows reads a row of it: nothing it points to lies outside it.

pyarrow's IPC reader keeps every buffer inside its message body and every body inside the file, but it trusts the
values that point into other buffers: a string's or a list's offsets, a dictionary's indices. A damaged offset
sends the copy of a row (`to_pylist`) past the memory map, into other mappings: a wrong value, or SIGBUS/SIGSEGV.
`check_record_batch` refuses such a batch with one FormatError. It is pyarrow's structural validation (buffer
sizes against lengths, the first and last offsets) and, for every offsets buffer of the batch (nested ones too),
that its offsets start at 0 or more, never decrease and end inside what they index; dictionary indices inside
their dictionary. It reads the offsets and indices only, never the data (no UTF-8 check: an invalid string is
a FormatError when a row holding it is read): ~4 bytes per row of each string or list column, once per record
batch per process. A type with other indirections (views, unions, run-end encoding) gets pyarrow's full validation.
What no check short of a checksum sees (bytes of text or numbers changed) reads as it is, inside the map.

A column the file's `datasets` features declare an ArrayXD of fixed shape (`Array2D(shape=(2, 3))`, stored as lists
of lists) must have that shape in every row (`check_shapes`, on the same offsets): `datasets` refuses such a row, and
without `datasets` imported it would read as nested lists of another shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sdl.loader.errors import FormatError

VALIDATE_HINT = ("run `sdl index {root} --validate` to list every damaged file, then re-save the dataset (save_to_disk) "
                 "or re-run load_dataset")


def check_record_batch(batch: Any, where: Any, number: int, first_row: int, root: Any) -> None:
    """Raise FormatError unless record batch `number` of file `where` (rows from `first_row`) points only inside itself,
    and its ArrayXD columns have their declared shapes."""
    import pyarrow as pa

    try:
        shapes = declared_shapes(batch.schema)
        for name, column in zip(batch.schema.names, batch.columns):
            try:
                column.validate()  # sizes of buffers against lengths, first and last offsets: metadata only
                check_array(column)
                if name in shapes:
                    check_shape(column, shapes[name], first_row)
            except WrongShape as exc:
                raise FormatError(f"{where}: column {name!r}, {exc}; the file does not match its features: "
                                  f"{VALIDATE_HINT.format(root=root)}") from None
            except pa.ArrowException as exc:
                raise pa.ArrowInvalid(f"column {name!r}: {exc}") from None
        batch.validate()  # columns as long as the batch
    except (pa.ArrowException, ValueError) as exc:
        found = " ".join(str(exc).split())
        raise FormatError(f"{where}: damaged Arrow record batch {number} (rows {first_row:,} to {first_row + len(batch) - 1:,} "
                          f"of the file): expected offsets and buffers inside it, found {found}; {VALIDATE_HINT.format(root=root)}") from None


def check_array(array: Any) -> None:
    """Raise ArrowInvalid unless the offsets and indices of `array` and of its children stay in bounds (see the module)."""
    import pyarrow as pa
    import pyarrow.types as t

    kind = array.type
    if t.is_dictionary(kind):
        check_indices(array.indices, len(array.dictionary))
        check_array(array.dictionary)
    elif t.is_string(kind) or t.is_binary(kind) or t.is_large_string(kind) or t.is_large_binary(kind):
        data = array.buffers()[2]
        check_offsets(array, data.size if data is not None else 0)
    elif t.is_list(kind) or t.is_large_list(kind) or t.is_map(kind):
        check_offsets(array, len(array.values))
        check_array(array.values)
    elif t.is_fixed_size_list(kind):
        check_array(array.values)
    elif isinstance(kind, pa.BaseExtensionType):  # e.g. the Array2D of `datasets`: its storage says it all
        check_array(array.storage)
    elif t.is_struct(kind):
        for i in range(kind.num_fields):
            check_array(array.field(i))
    elif not (t.is_primitive(kind) or t.is_fixed_size_binary(kind) or t.is_decimal(kind) or t.is_null(kind)):
        array.validate(full=True)  # views, unions, run-end encoded: pyarrow checks all of it


def check_offsets(array: Any, limit: int) -> None:
    """The offsets of `array`'s rows (its buffer 1, sized by the structural validation) rise from >= 0 to <= `limit`."""
    import pyarrow as pa

    if len(array) == 0:
        return
    width = 8 if array.type in (pa.large_string(), pa.large_binary()) or pa.types.is_large_list(array.type) else 4
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=len(array) + 1,
                            offset=array.offset * width)
    if offsets[0] < 0 or offsets[-1] > limit or np.any(offsets[1:] < offsets[:-1]):
        bad = int(np.argmax(offsets[1:] < offsets[:-1])) if offsets[0] >= 0 and offsets[-1] <= limit else None
        what = (f"decreasing at row {bad:,} of the batch" if bad is not None
                else f"from {int(offsets[0]):,} to {int(offsets[-1]):,}, outside 0 to {limit:,}")
        raise pa.ArrowInvalid(f"{array.type} offsets {what}")


def check_indices(indices: Any, size: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    low, high = pc.min_max(indices).values()
    if low.is_valid and (low.as_py() < 0 or high.as_py() >= size):
        raise pa.ArrowInvalid(f"dictionary indices from {low.as_py()} to {high.as_py()} for a dictionary of {size:,} values")


class WrongShape(ValueError):
    """Row `row` of the file, an ArrayXD column's, holds `found` items on `axis` where the declared `shape` says otherwise."""

    def __init__(self, row: int, axis: int, found: int, shape: tuple[int | None, ...]) -> None:
        super().__init__(f"row {row:,} of the file: expected the declared shape {shape}, found {found} items on axis {axis}")
        self.row, self.axis, self.found, self.shape = row, axis, found, shape


def declared_shapes(schema: Any) -> dict[str, tuple[int | None, ...]]:
    """{column: shape} of the columns the schema's `datasets` features declare Array2D to Array5D (None: a dynamic
    first axis); {} when it declares none or its metadata does not parse (the index reports that)."""
    import json

    try:
        features = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))["info"]["features"]
        return {name: tuple(f["shape"]) for name, f in features.items() if isinstance(f, dict)
                and f.get("_type") in ("Array2D", "Array3D", "Array4D", "Array5D") and isinstance(f.get("shape"), list)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def check_shape(column: Any, shape: tuple[int | None, ...], first_row: int) -> None:
    """Raise WrongShape unless every row of `column` (lists of lists, its offsets already checked) has `shape`."""
    import pyarrow as pa

    array = column.storage if isinstance(column.type, pa.BaseExtensionType) else column
    rows = np.arange(len(array))  # the row each list of this level belongs to
    for depth, size in enumerate(shape):
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            return  # fixed-size lists (fixed by their type) or a storage this check does not know
        offsets = np.asarray(array.offsets)
        lengths = np.diff(offsets)
        valid = np.ones(len(array), bool) if array.null_count == 0 else np.asarray(array.is_valid())
        if size is not None and np.any(valid & (lengths != size)):
            bad = int(np.argmax(valid & (lengths != size)))
            raise WrongShape(first_row + int(rows[bad]), depth, int(lengths[bad]), tuple(shape))
        rows = np.repeat(rows, np.where(valid, lengths, 0))
        array = array.flatten()
