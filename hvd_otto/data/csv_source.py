"""CSV → validated DataFrame, with every bad row named by file, line and column.

Reading keeps physical line numbers (so every error can name its line) without any per-row
Python on the JVM side: Spark's text source reads the file, ``input_file_block_start`` tells
which split a line came from, and the lines are parsed and validated in Arrow batches.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

from ..common import fs as store
from .schema import (
    COLUMN,
    LINE,
    RAW,
    REASON,
    CsvSchema,
    InputError,
    parse_lines,
    parsed_columns,
    schema_from_header,
    split_header_line,
)

log = logging.getLogger(__name__)

BAD_ROW_POLICIES = ("fail", "quarantine")
MAX_REPORTED_BAD_ROWS = 10


@dataclass
class ParsedCsv:
    """A validated CSV: its schema and every data row with its verdict (``_reason``)."""

    display: str
    schema: CsvSchema
    rows: object  # pyspark DataFrame of parsed_columns(schema)
    total: int
    bad: int

    @property
    def good_rows(self):
        """The good rows, typed, with the CSV's own column names plus ``_line``."""
        from pyspark.sql import functions as F

        keep = [c for c in self.rows.columns if c not in (REASON, COLUMN, RAW)]
        return self.rows.where(F.col(REASON).isNull()).select(*keep)

    @property
    def bad_rows(self):
        from pyspark.sql import functions as F

        return self.rows.where(F.col(REASON).isNotNull()).select(LINE, COLUMN, REASON, RAW)


def stage_source(fs: store.HadoopFs, path: str, scratch_url: str) -> tuple[str, str]:
    """Check that ``path`` is a readable CSV and return ``(url_for_spark, name_for_errors)``.

    A local ``.zip`` (as Kaggle ships Otto) is extracted into ``scratch_url``; Spark reads
    ``.csv`` and ``.csv.gz`` directly from local paths, ``file://``, ``hdfs://`` and ``s3a://``.
    """
    url = store.to_url(path)
    if not fs.exists(url):
        raise InputError(f"{path}: file not found; check the path (local, file://, hdfs://, s3a://).")
    if fs.is_dir(url):
        raise InputError(f"{path}: is a folder; pass one CSV file (.csv, .csv.gz or .zip).")
    if fs.size(url) == 0:
        raise InputError(f"{path}: the file is empty; it needs a header line and data rows.")
    if not url.lower().endswith(".zip"):
        return url, path
    local = store.local_path(url)
    if local is None:
        raise InputError(f"{path}: .zip is read from local paths only; unzip it to {url[:-4]}.")
    try:
        with zipfile.ZipFile(local) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise InputError(
                    f"{path}: the zip holds {len(members)} files; it must hold exactly one CSV."
                )
            tmp = tempfile.mkdtemp(prefix="hvd-otto-unzip-")
            try:
                extracted = archive.extract(members[0], tmp)
                target = store.join(scratch_url, os.path.basename(extracted))
                fs.copy_from_local(extracted, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise InputError(f"{path}: not a valid zip file ({err}).") from None
    return target, f"{path} (member {members[0].filename})"


def read_csv(
    spark,
    url: str,
    display: str,
    id_col: str = "id",
    label_col: str | None = "target",
    require_label: bool = True,
) -> ParsedCsv:
    """Read and validate one Otto-schema CSV with Spark; the result's rows are cached.

    Each Arrow batch of lines is parsed natively by :func:`~.schema.parse_rows_fast` when it is
    provably clean, otherwise line by line by :func:`~.schema.parse_rows` (exact reasons).
    """
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    from ..common.preflight import INGEST_MODULES, check_executor_python

    check_executor_python(spark.sparkContext, INGEST_MODULES)  # workers parse the lines
    # Lines travel as bytes: a batch the fast path declines is decoded with replacement, so a
    # byte that is not UTF-8 becomes a rejected row naming its line instead of a crash.
    text = spark.read.text(url).select(F.input_file_block_start().alias("_block"),
                                       F.col("value").cast("binary").alias("value"))
    first = text.limit(1).collect()
    if not first:
        raise InputError(f"{display}: the file is empty; it needs a header line and data rows.")
    schema = schema_from_header(
        split_header_line(bytes(first[0]["value"]).decode("utf-8", errors="replace")),
        display, id_col, label_col, require_label
    )
    block_lines = sorted((r["_block"], r["count"]) for r in text.groupBy("_block").count().collect())
    first_line, line = {}, 1
    for block, count in block_lines:
        first_line[block] = line
        line += count
    if line - 1 < 2:
        raise InputError(f"{display}: has a header but no data rows.")

    def parse(batches):
        for batch, numbers in numbered(batches, first_line):
            values = batch.column("value")
            data = numbers != 1  # the header (line 1) is not a data row
            if not data.all():
                values, numbers = values.filter(pa.array(data)), numbers[data]
            yield from parse_lines(values, numbers, schema).to_batches()

    def raw_lines(batches):
        for batch, numbers in numbered(batches, first_line):
            raw = [v.decode("utf-8", errors="replace") for v in batch.column("value").to_pylist()]
            yield pa.RecordBatch.from_arrays([pa.array(numbers, pa.int64()),
                                              pa.array(raw, pa.string())], names=[LINE, RAW])

    fields = [StructField(LINE, LongType()), StructField(schema.id_col, StringType())]
    if schema.label_col:
        fields.append(StructField(schema.label_col, StringType()))
    fields += [StructField(c, DoubleType()) for c in schema.feature_cols]
    fields += [StructField(c, StringType()) for c in (REASON, COLUMN, RAW)]
    assert [f.name for f in fields] == parsed_columns(schema)
    rows = flag_duplicate_ids(
        text.mapInArrow(parse, StructType(fields)).persist(), schema.id_col,
        lambda: text.mapInArrow(raw_lines, StructType([StructField(LINE, LongType()),
                                                       StructField(RAW, StringType())])))
    counts = rows.groupBy(F.col(REASON).isNull().alias("good")).count().collect()
    by_verdict = {r["good"]: r["count"] for r in counts}
    total = sum(by_verdict.values())
    if total == 0:
        raise InputError(f"{display}: has a header but no data rows (only blank lines).")
    return ParsedCsv(display, schema, rows, total, by_verdict.get(False, 0))


def numbered(batches, first_line: dict[int, int]):
    """Each Arrow batch of ``(_block, value)`` rows with the file line number of every row.

    A block is read by one task in order, so its lines count up from the block's first line;
    the numbers are an ``int64`` numpy array, counted per block with numpy (no per-row Python).
    """
    import numpy as np

    seen: dict[int, int] = {}
    for batch in batches:
        blocks = batch.column("_block").to_numpy(zero_copy_only=False)
        numbers = np.empty(len(blocks), dtype=np.int64)
        for block in np.unique(blocks):  # usually one block per batch
            at = np.flatnonzero(blocks == block)
            start = first_line[int(block)] + seen.get(int(block), 0)
            numbers[at] = np.arange(start, start + len(at), dtype=np.int64)
            seen[int(block)] = seen.get(int(block), 0) + len(at)
        yield batch, numbers


def flag_duplicate_ids(rows, id_col: str, raw_lines):
    """Mark every good row whose id already appeared on an earlier good line as bad.

    ``rows`` is persisted; only ids and line numbers are aggregated, and the (usually empty)
    duplicates are joined back, so a file without duplicates costs one small aggregation.
    ``raw_lines()`` is a frame of every ``(_line, _raw)``: the rejected duplicates' text is
    read again from it (only when there are duplicates).
    """
    from pyspark.sql import functions as F

    good = F.col(REASON).isNull() & F.col(id_col).isNotNull()
    dups = (rows.where(good).groupBy(id_col)
            .agg(F.min(LINE).alias("_first"), F.count(F.lit(1)).alias("_n"))
            .where(F.col("_n") > 1).select(id_col, "_first"))
    if not dups.limit(1).collect():
        return rows
    duplicate = good & F.col("_first").isNotNull() & (F.col(LINE) > F.col("_first"))
    reason = F.concat(F.lit("duplicate id (first at line "), F.col("_first").cast("string"),
                      F.lit(")"))
    marked = (rows.join(dups, on=id_col, how="left").withColumn("_dup", duplicate)
              .withColumn(REASON, F.when(F.col("_dup"), reason).otherwise(F.col(REASON)))
              .withColumn(COLUMN, F.when(F.col("_dup"), F.lit(id_col)).otherwise(F.col(COLUMN))))
    text = raw_lines().withColumnRenamed(RAW, "_dup_raw").join(
        marked.where(F.col("_dup")).select(LINE), on=LINE, how="left_semi")
    marked = (marked.join(text, on=LINE, how="left")
              .withColumn(RAW, F.coalesce(F.col(RAW), F.col("_dup_raw")))
              .select(*rows.columns).persist())
    marked.count()
    rows.unpersist()
    return marked


def load_csv(spark, path: str, id_col: str = "id", label_col: str | None = "target",
             require_label: bool = True):
    """A validated CSV as a typed DataFrame (id, label, features as doubles, ``_line``).

    The entry point of the seed's flow: ``Pipeline([...]).fit(load_csv(spark, "train.csv"))``.
    Any bad row raises :class:`InputError` naming file, line and column. A local ``.zip``
    is extracted to a temporary folder that lives as long as this process (Spark may re-read
    it) and is removed when the process exits; nothing is made for other files.
    """
    fs = store.HadoopFs(spark)
    scratch = None
    if path.lower().endswith(".zip"):
        scratch = tempfile.mkdtemp(prefix="hvd-otto-csv-")
        atexit.register(shutil.rmtree, scratch, True)
    url, display = stage_source(fs, path, store.to_url(scratch) if scratch else "")
    parsed = read_csv(spark, url, display, id_col, label_col, require_label)
    if parsed.bad:
        raise InputError(bad_rows_message(parsed))
    return parsed.good_rows


def feature_columns(frame, id_col: str, label_col: str | None) -> list[str]:
    """The feature columns of a frame from :func:`load_csv`: all but line, id and label."""
    return [c for c in frame.columns if c not in (LINE, id_col, label_col)]


def bad_rows_message(parsed: ParsedCsv, out_hint: str = "OUT") -> str:
    """One error paragraph: file, the first bad lines with column and reason, the total."""
    first = parsed.bad_rows.orderBy(LINE).limit(MAX_REPORTED_BAD_ROWS).collect()
    lines = [
        f"{parsed.display}: {parsed.bad:,} bad row(s) out of {parsed.total:,}"
        f" (first {len(first)} shown):"
    ]
    for row in first:
        where = f"line {row[LINE]}" + (f", column '{row[COLUMN]}'" if row[COLUMN] else "")
        lines.append(f"  {where}: {row[REASON]}")
    lines.append(
        "Fix these rows, or pass --bad-rows quarantine to write them with their reasons to "
        f"{out_hint}/rejected/ and go on with the good rows."
    )
    return "\n".join(lines)


def check_feature_columns(display: str, found, expected) -> None:
    """A file scored with a fitted model must have the training file's feature columns, by
    name and in any order; extra columns are ignored with a warning (the model never reads them;
    their cells were validated like every column's).
    """
    missing = [c for c in expected if c not in set(found)]
    if missing:
        raise InputError(
            f"{display}, line 1 (header): feature column(s) of the training file missing: "
            f"{missing[:10]}{' …' if len(missing) > 10 else ''} ({len(missing)} of "
            f"{len(expected)}); the header must name every feature the model was trained on."
        )
    extra = [c for c in found if c not in set(expected)]
    if extra:
        log.warning("%s: ignoring %d column(s) the model was not trained on: %s", display,
                    len(extra), extra[:10])


def handle_bad_rows(parsed: ParsedCsv, policy: str, staging: str, name: str, out: str) -> int:
    """Fail with one clear error, or write bad rows to ``rejected/<name>``; return their count."""
    if parsed.bad == 0:
        return 0
    if policy == "fail":
        raise InputError(bad_rows_message(parsed, out))
    if parsed.bad == parsed.total:
        raise InputError(f"every row is bad ({parsed.bad:,} of {parsed.total:,}); nothing "
                         "is left to quarantine around. " + bad_rows_message(parsed, out))
    log.warning("%s: quarantining %d bad row(s)", parsed.display, parsed.bad)
    (parsed.bad_rows.orderBy(LINE)
     .withColumnRenamed(LINE, "line").withColumnRenamed(COLUMN, "column")
     .withColumnRenamed(REASON, "reason").withColumnRenamed(RAW, "raw")
     .coalesce(1).write.option("header", True).option("escape", '"')
     .csv(store.join(staging, "rejected", name)))
    return parsed.bad
