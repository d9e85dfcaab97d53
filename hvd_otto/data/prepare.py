"""Prepared data: validated CSV → stratified split → fitted preprocessing → Parquet for Petastorm.

``prepare`` writes a folder (committed atomically, with ``_SUCCESS``)::

    OUT/train/, OUT/validation/, OUT/test/   Parquet: id, features array<float>, label int
    OUT/preprocessing/                      the fitted preprocessing PipelineModel
    OUT/rejected/{train,test}/              quarantined rows (line, column, reason, raw)
    OUT/metadata.json                       columns, labels, counts, settings
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from ..common import fs as store
from ..common.errors import InputError
from .csv_source import (
    BAD_ROW_POLICIES,
    check_feature_columns,
    handle_bad_rows,
    read_csv,
    stage_source,
)
from .features import (
    FEATURES_COL,
    LABEL_COL,
    apply_preprocessing,
    build_preprocessing,
    label_names,
)
from .schema import LINE

log = logging.getLogger(__name__)

DEFAULT_ROW_GROUPS = 24  # divisible by 1, 2, 3, 4, 6, 8, 12, 24 ranks: balanced shards


def stratified_split(df, label_col: str, fraction: float, seed: int):
    """Split into (train, validation) with round(fraction · n) validation rows per class.

    The order within a class is a hash of the seed and the row's line number, so the split
    does not depend on how Spark partitioned the data. Only ``(label, hash, line)`` is ranked
    (a narrow shuffle, one small job): each class's last validation row becomes a threshold,
    and a row is in validation when its ``(hash, line)`` is not above its class's threshold.
    The wide rows are neither shuffled nor cached again; both splits are filters of ``df``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if fraction <= 0:
        return df, df.limit(0)
    if not 0 < fraction < 1:
        raise InputError(f"--validation must be in [0, 1), got {fraction}.")
    order = F.xxhash64(F.lit(seed), F.col(LINE))
    keys = df.select(F.col(label_col).alias("_label"), order.alias("_top_hash"),
                     F.col(LINE).alias("_top_line"))
    by_class = Window.partitionBy("_label")
    ranked = (keys.withColumn("_rank", F.row_number().over(by_class.orderBy("_top_hash",
                                                                            "_top_line")))
              .withColumn("_n", F.count(F.lit(1)).over(by_class)))
    last = ranked.where(F.col("_rank") == F.round(F.col("_n") * F.lit(fraction))).select(
        "_label", "_top_hash", "_top_line")
    thresholds = df.sparkSession.createDataFrame(last.collect(), last.schema)
    marked = df.join(F.broadcast(thresholds), df[label_col] == thresholds["_label"], "left")
    is_val = F.coalesce((order < F.col("_top_hash"))
                        | ((order == F.col("_top_hash")) & (F.col(LINE) <= F.col("_top_line"))),
                        F.lit(False))
    marked = marked.withColumn("_is_val", is_val)
    cols = df.columns
    return (marked.where(~F.col("_is_val")).select(*cols),
            marked.where(F.col("_is_val")).select(*cols))


def float_array(df, col: str):
    """A Vector or numeric array column as ``array<float>`` (what Petastorm and Keras read)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    if isinstance(df.schema[col].dataType, VectorUDT):
        return vector_to_array(F.col(col), "float32")
    return F.col(col).cast("array<float>")


def to_petastorm_frame(df, row_groups: int, features_col: str = FEATURES_COL,
                       label_col: str | None = LABEL_COL, id_col: str | None = None):
    """``id`` (optional), ``features`` array<float>, ``label`` int, in ``row_groups`` balanced
    partitions; each Parquet file is one row group, the unit Petastorm shards by."""
    from pyspark.sql import functions as F

    cols = [F.col(id_col).cast("string").alias("id")] if id_col else []
    cols.append(float_array(df, features_col).alias(FEATURES_COL))
    if label_col:
        cols.append(F.col(label_col).cast("int").alias(LABEL_COL))
    return df.select(*cols).repartition(row_groups)


@dataclass
class PrepareResult:
    """What ``prepare`` wrote and counted."""

    out: str
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0


def prepare(
    spark,
    train: str,
    out: str,
    *,
    test: str | None = None,
    id_col: str = "id",
    label_col: str = "target",
    bad_rows: str = "fail",
    validation: float = 0.2,
    transform: str = "log1p",
    seed: int = 42,
    row_groups: int = DEFAULT_ROW_GROUPS,
    overwrite: bool = False,
) -> PrepareResult:
    """Validate a training CSV, fit the preprocessing on its training split, write Parquet.

    Output (committed atomically, with ``_SUCCESS``): ``train/``, ``validation/``, optional
    ``test/``, ``preprocessing/`` (the fitted PipelineModel), ``rejected/`` (quarantined rows,
    CSV with line, column, reason, raw) and ``metadata.json``.
    """
    if bad_rows not in BAD_ROW_POLICIES:
        raise InputError(f"--bad-rows must be one of {BAD_ROW_POLICIES}, got '{bad_rows}'.")
    if row_groups < 1:
        raise InputError(f"--row-groups must be at least 1, got {row_groups}.")
    started = time.perf_counter()
    fs = store.HadoopFs(spark)
    out_url = store.to_url(out)
    store.check_output(fs, out_url, overwrite)
    with store.atomic_dir(fs, out_url, overwrite) as staging:
        scratch = store.join(staging, "_source")
        url, display = stage_source(fs, train, scratch)
        log.info("reading %s", display)
        parsed = read_csv(spark, url, display, id_col, label_col, require_label=True)
        rejected = {"train": handle_bad_rows(parsed, bad_rows, staging, "train", out)}
        train_df, val_df = stratified_split(parsed.good_rows, label_col, validation, seed)
        log.info("fitting preprocessing on the training split")
        model = build_preprocessing(parsed.schema.feature_cols, label_col, transform).fit(train_df)
        model.save(store.join(staging, "preprocessing"))
        split_meta = _write_splits(spark, model, {"train": train_df, "validation": val_df},
                                   staging, row_groups, id_col)
        if test:
            split_meta["test"], rejected["test"] = _prepare_test(
                spark, fs, test, model, parsed.schema, staging, bad_rows, row_groups, out
            )
        parsed.rows.unpersist()
        fs.delete(scratch)
        metadata = {
            "format": "hvd-otto-prepared/1", "source": {"train": train, "test": test},
            "id_col": id_col, "label_col": label_col,
            "feature_cols": list(parsed.schema.feature_cols), "labels": label_names(model),
            "label_mapping": {label: i for i, label in enumerate(label_names(model))},
            "transform": transform, "seed": seed, "validation_fraction": validation,
            "row_groups": row_groups, "bad_rows_policy": bad_rows, "input_rows": parsed.total,
            "rejected_rows": rejected, "splits": split_meta,
        }
        fs.write_text(store.join(staging, "metadata.json"), json.dumps(metadata, indent=2))
    return PrepareResult(out_url, metadata, time.perf_counter() - started)


def _write_splits(spark, model, splits: dict, staging: str, row_groups: int,
                  id_col: str) -> dict:
    """Transform and write each split as Parquet; return its rows and per-class counts."""
    from pyspark.sql import functions as F

    for name, df in splits.items():
        frame = to_petastorm_frame(model.transform(df), row_groups, id_col=id_col)
        frame.write.parquet(store.join(staging, name))
    written = [spark.read.parquet(store.join(staging, name)).withColumn("split", F.lit(name))
               for name in splits]
    union = written[0]
    for frame in written[1:]:
        union = union.unionByName(frame)
    labels = label_names(model)
    meta = {name: {"rows": 0, "class_counts": {label: 0 for label in labels}} for name in splits}
    for row in union.groupBy("split", LABEL_COL).count().collect():
        meta[row["split"]]["rows"] += row["count"]
        meta[row["split"]]["class_counts"][labels[row[LABEL_COL]]] = row["count"]
    return meta


def read_prepared_metadata(fs: store.HadoopFs, path: str) -> dict:
    """The ``metadata.json`` of a committed ``prepare`` output, or a clear error."""
    url = store.to_url(path)
    if not store.is_committed(fs, url):
        raise InputError(f"{path}: not a complete prepared folder (no _SUCCESS); "
                         "run 'hvd-otto prepare' first.")
    return json.loads(fs.read_text(store.join(url, "metadata.json")))


def _prepare_test(spark, fs, test, model, train_schema, staging, bad_rows, row_groups, out):
    """Validate a test CSV against the training columns and transform it with the fitted model."""
    scratch = store.join(staging, "_source_test")
    url, display = stage_source(fs, test, scratch)
    parsed = read_csv(spark, url, display, train_schema.id_col, train_schema.label_col,
                      require_label=False)
    check_feature_columns(display, parsed.schema.feature_cols, train_schema.feature_cols)
    rejected = handle_bad_rows(parsed, bad_rows, staging, "test", out)
    frame = to_petastorm_frame(apply_preprocessing(model, parsed.good_rows), row_groups,
                               label_col=None, id_col=train_schema.id_col)
    frame.write.parquet(store.join(staging, "test"))
    rows = parsed.total - parsed.bad
    parsed.rows.unpersist()
    fs.delete(scratch)
    return {"rows": rows}, rejected
