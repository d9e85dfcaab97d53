"""The CSV contract: which columns are the id, the label and the features, and input errors.

Nothing here hard-codes Otto's 93 features or 9 classes: the header decides.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Sequence

from ..common.errors import InputError


@dataclass(frozen=True)
class CsvSchema:
    """Column roles of one Otto-shaped CSV, decided from its header."""

    columns: tuple[str, ...]
    id_col: str
    label_col: str | None
    feature_cols: tuple[str, ...] = field(default=())

    @property
    def n_fields(self) -> int:
        return len(self.columns)

    def index(self, name: str) -> int:
        return self.columns.index(name)


def split_header_line(line: str) -> list[str]:
    """Split one CSV header line into column names (quotes and a UTF-8 BOM handled)."""
    line = line.lstrip("\ufeff").rstrip("\r\n")
    return [name.strip() for name in next(csv.reader([line]))]


def schema_from_header(
    names: Sequence[str],
    source: str,
    id_col: str = "id",
    label_col: str | None = "target",
    require_label: bool = True,
) -> CsvSchema:
    """Check a header and assign column roles.

    ``label_col`` is the label's name; with ``require_label=False`` a header without it is
    accepted (a test file) and the schema has ``label_col=None``.
    Raises :class:`InputError` naming the file, the column and what to do.
    """
    names = list(names)
    where = f"{source}, line 1 (header)"
    if not names or names == [""]:
        raise InputError(f"{where}: the header is empty; the first line must name the columns.")
    empty = [i + 1 for i, n in enumerate(names) if n == ""]
    if empty:
        raise InputError(
            f"{where}: column(s) {empty} have no name; every column needs a name in the header."
        )
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(
                f"{where}: duplicate column name '{name}' (columns {seen[name] + 1} and {i + 1});"
                " rename one of them."
            )
        seen[name] = i
    if id_col not in seen:
        raise InputError(
            f"{where}: no id column '{id_col}' (columns: {_preview(names)});"
            " name the id column with --id-col."
        )
    label = label_col if label_col in seen else None
    if require_label and label is None:
        raise InputError(
            f"{where}: no label column '{label_col}' (columns: {_preview(names)});"
            " a labelled file (training or evaluation) needs one; name it with --label-col."
        )
    features = tuple(n for n in names if n not in (id_col, label))
    if not features:
        raise InputError(
            f"{where}: no feature columns; every column other than '{id_col}'"
            f"{' and ' + repr(label) if label else ''} is a feature, and there are none."
        )
    return CsvSchema(columns=tuple(names), id_col=id_col, label_col=label, feature_cols=features)


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --- Row validation ---------------------------------------------------------------------------

#: Largest magnitude accepted for a feature: beyond float32's range the value cannot be stored.
MAX_ABS_VALUE = 3.0e38

#: Bookkeeping columns of a parsed row, beside the CSV's own (typed) columns.
LINE, REASON, COLUMN, RAW = "_line", "_reason", "_column", "_raw"


def parsed_columns(schema: CsvSchema) -> list[str]:
    """Column order of :func:`parse_rows` output: line, id, label, features, then the verdict."""
    label = [schema.label_col] if schema.label_col else []
    return [LINE, schema.id_col, *label, *schema.feature_cols, REASON, COLUMN, RAW]


def parse_rows(lines: Sequence[str], line_numbers: Sequence[int], schema: CsvSchema,
               keep_raw: bool = False):
    """Parse and validate data lines of one CSV; vectorised over the batch.

    Returns a ``pandas.DataFrame`` with one row per non-blank input line and the columns
    :func:`parsed_columns` (features as float64, NaN on bad rows). ``_reason``/``_column``
    are ``None`` for a good row, otherwise the first
    problem found (field count, empty id or label, then features in column order:
    not a number, NaN, infinite, out of range, negative, not an integer). ``_raw`` is the
    line for bad rows (for every row with ``keep_raw``).
    """
    import numpy as np
    import pandas as pd

    keep = [i for i, text in enumerate(lines) if text.strip() != ""]
    lines = [lines[i].lstrip("\ufeff") for i in keep]
    verdict = _RowVerdicts(len(lines), len(schema.feature_cols))
    fields = _split_fields(lines)
    candidates = _check_structure(lines, fields, schema, verdict)
    if candidates:
        _check_features(fields, candidates, schema, verdict)

    out = {LINE: np.asarray(line_numbers, dtype=np.int64)[keep], schema.id_col: verdict.ids}
    if schema.label_col:
        out[schema.label_col] = verdict.labels
    for j, name in enumerate(schema.feature_cols):
        out[name] = verdict.matrix[:, j]
    out[REASON] = verdict.reasons
    out[COLUMN] = verdict.columns
    out[RAW] = list(lines) if keep_raw else [None if r is None else t
                                             for r, t in zip(verdict.reasons, lines)]
    return pd.DataFrame(out, columns=parsed_columns(schema))


class _RowVerdicts:
    """Per-line results of :func:`parse_rows` while it checks a batch."""

    def __init__(self, n: int, n_features: int):
        import numpy as np

        self.reasons: list[str | None] = [None] * n
        self.columns: list[str | None] = [None] * n
        self.ids: list[str | None] = [None] * n
        self.labels: list[str | None] = [None] * n
        self.matrix = np.full((n, n_features), np.nan)


def _split_fields(lines: list[str]) -> list[list[str] | None]:
    """Split lines into fields; a line with malformed quoting becomes ``None``."""
    try:
        return list(csv.reader(lines, strict=True))
    except csv.Error:
        return [_split_one(text) for text in lines]


def _check_structure(lines, fields, schema: CsvSchema, verdict: _RowVerdicts) -> list[int]:
    """Quoting, encoding, field count, empty id or label; returns the lines left to check."""
    id_at = schema.index(schema.id_col)
    label_at = schema.index(schema.label_col) if schema.label_col else None
    candidates = []
    for i, row in enumerate(fields):
        if row is None:
            verdict.reasons[i] = "malformed quoting"
        elif "\ufffd" in lines[i]:
            verdict.reasons[i] = "bytes that are not valid UTF-8; save the file as UTF-8"
        elif len(row) != schema.n_fields:
            verdict.reasons[i] = f"expected {schema.n_fields} fields, found {len(row)}"
        elif row[id_at].strip() == "":
            verdict.reasons[i], verdict.columns[i] = "empty id", schema.id_col
        elif label_at is not None and row[label_at].strip() == "":
            verdict.reasons[i], verdict.columns[i] = "empty label", schema.label_col
        else:
            verdict.ids[i] = row[id_at].strip()
            verdict.labels[i] = row[label_at].strip() if label_at is not None else None
            candidates.append(i)
    return candidates


def _check_features(fields, candidates: list[int], schema: CsvSchema,
                    verdict: _RowVerdicts) -> None:
    """The feature cells of the candidate lines, column-wise in numpy: first problem wins."""
    import numpy as np

    feat_at = [schema.index(c) for c in schema.feature_cols]
    by_column = list(zip(*[fields[i] for i in candidates]))
    cells = [by_column[j] for j in feat_at]  # cells[j][k]: feature j of candidate k
    values = np.column_stack([_to_float(column) for column in cells])
    with np.errstate(invalid="ignore"):
        is_nan = np.isnan(values)
        nan_literal = np.zeros_like(is_nan)
        for k, j in np.argwhere(is_nan):
            nan_literal[k, j] = cells[j][k].strip().lower() in ("nan", "-nan", "+nan")
        infinite = np.isinf(values)
        finite = ~is_nan & ~infinite
        too_large = finite & (np.abs(values) > MAX_ABS_VALUE)
        negative = finite & (values < 0)
        fractional = finite & ~too_large & (np.floor(values) != values)
    checks = [
        (is_nan & ~nan_literal, "not a number"),
        (nan_literal, "NaN"),
        (infinite, "infinite"),
        (too_large, "out of range"),
        (negative, "negative count"),
        (fractional, "not an integer count"),
    ]
    bad_any = np.zeros_like(is_nan)
    for mask, _ in checks:
        bad_any |= mask
    first_bad = bad_any.argmax(axis=1)
    row_bad = bad_any.any(axis=1)
    for k, i in enumerate(candidates):
        if not row_bad[k]:
            verdict.matrix[i] = values[k]
            continue
        j = first_bad[k]
        what = next(name for mask, name in checks if mask[k, j])
        verdict.columns[i] = schema.feature_cols[j]
        verdict.reasons[i] = f"{what} ({cells[j][k]!r})"
        verdict.ids[i] = verdict.labels[i] = None


def _to_float(column: Sequence[str]):
    """Parse one column of strings to float64 in Arrow; unparsable cells become NaN."""
    import pandas as pd
    import pyarrow as pa

    try:
        return pa.array(column, pa.string()).cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(pd.Series(column, dtype=object), errors="coerce").to_numpy(float)


def _split_one(text: str) -> list[str] | None:
    """Split a single line, or ``None`` when its quoting is malformed."""
    try:
        return next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration):
        return None


# --- Native fast path -------------------------------------------------------------------------

#: Bytes a batch may hold for :func:`parse_rows_fast` to take it: printable ASCII other than
#: space and ``"``, plus the ``\n`` between lines. Anything else (quotes, whitespace, a BOM,
#: ``\r``, bytes that are not ASCII or not UTF-8) sends the batch to :func:`parse_rows`.
_FAST_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x22) + b"\n"


def arrow_schema(schema: CsvSchema):
    """The Arrow schema of :func:`parsed_columns` (what Spark's ``mapInArrow`` expects)."""
    import pyarrow as pa

    types = {LINE: pa.int64(), **{c: pa.float64() for c in schema.feature_cols}}
    return pa.schema([(c, types.get(c, pa.string())) for c in parsed_columns(schema)])


def parse_rows_fast(buffer: bytes, line_numbers, schema: CsvSchema):
    """Parse a batch of data lines natively with pyarrow when every row is provably good.

    ``buffer`` is the batch's lines joined with ``b"\\n"`` and ``line_numbers`` their file line
    numbers. Returns a ``pyarrow.Table`` of :func:`arrow_schema` that equals what
    :func:`parse_rows` gives for these lines (all verdicts ``None``), or ``None`` when the batch
    might hold anything :func:`parse_rows` would reject, or treat differently: a byte outside
    :data:`_FAST_BYTES` (so no quotes, whitespace, BOM, CR, non-ASCII or invalid UTF-8), a
    blank line, a wrong field count, an empty id or label, an empty, NaN, infinite, negative,
    fractional or out-of-range feature, or any cell pyarrow does not parse. Then the caller
    runs :func:`parse_rows`, which names every bad line's column and reason.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    n = len(line_numbers)
    raw = np.frombuffer(buffer, dtype=np.uint8)
    if n == 0 or raw.size == 0 or np.count_nonzero(raw == 0x0A) != n - 1:
        return None  # a line holds "\n" (or lines are missing): not a plain batch
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(_FAST_BYTES, dtype=np.uint8)] = True
    if not allowed[raw].all():
        return None
    text_cols = [c for c in (schema.id_col, schema.label_col) if c]
    types = {c: pa.string() for c in text_cols}
    types.update({c: pa.float64() for c in schema.feature_cols})
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(buffer),
            read_options=pa_csv.ReadOptions(column_names=list(schema.columns), use_threads=False,
                                            block_size=max(1 << 20, raw.size + 1)),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[],
                                                  strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n:  # pyarrow skipped an empty line
        return None
    for name in text_cols:
        column = table[name]
        if column.null_count or pc.min(pc.binary_length(column)).as_py() == 0:
            return None
    for name in schema.feature_cols:
        column = table[name]
        if column.null_count:
            return None
        values = column.to_numpy()
        with np.errstate(invalid="ignore"):
            good = (values >= 0) & (values <= MAX_ABS_VALUE) & (np.floor(values) == values)
        if not good.all():  # NaN fails every comparison, infinities the range
            return None
    out = arrow_schema(schema)
    nulls = pa.nulls(n, pa.string())
    columns = {LINE: pa.array(np.asarray(line_numbers, dtype=np.int64)), REASON: nulls,
               COLUMN: nulls, RAW: nulls}
    return pa.table([columns[c] if c in columns else table[c] for c in out.names], schema=out)


def parse_lines(values, line_numbers, schema: CsvSchema):
    """What ``read_csv`` does with one batch: :func:`parse_rows_fast`, else :func:`parse_rows`.

    ``values`` are the raw lines (a pyarrow binary array, or a list of ``bytes``) without the
    header, ``line_numbers`` their file line numbers. Returns a ``pyarrow.Table`` of
    :func:`arrow_schema`; only a batch the fast path declines is decoded (with replacement, so
    bytes that are not UTF-8 become a rejected row) and checked line by line in Python.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(values, pa.binary()) if not isinstance(values, pa.Array) else values
    fast = None
    if len(values):
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()),
                                                         values.cast(pa.binary())), b"\n")[0]
        fast = parse_rows_fast(joined.as_buffer(), line_numbers, schema)
    if fast is not None:
        return fast
    lines = [v.decode("utf-8", errors="replace") for v in values.to_pylist()]
    frame = parse_rows(lines, line_numbers, schema)
    return pa.Table.from_pandas(frame, schema=arrow_schema(schema), preserve_index=False)
