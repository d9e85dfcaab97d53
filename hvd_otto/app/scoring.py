"""Saved models and what is done with them: load, score a raw CSV, evaluate, write a submission.

A model saved by ``hvd-otto train`` or ``hvd-otto pipeline`` is a Spark ``PipelineModel``:
the fitted preprocessing (StringIndexer → VectorAssembler → count transform → scaler) followed
by a :class:`~hvd_otto.driver.model.HorovodKerasModel`. It scores the columns of a raw CSV.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

from ..common import fs as store
from ..common.errors import InputError
from ..data.features import apply_preprocessing
from ..data.schema import LINE


@dataclass
class SavedModel:
    """A loaded ``PipelineModel`` and the facts needed to score a CSV with it."""

    pipeline: object  # pyspark.ml.PipelineModel

    @property
    def keras_stage(self):
        return self.pipeline.stages[-1]

    def _stage(self, kind):
        return next((s for s in self.pipeline.stages if isinstance(s, kind)), None)

    @property
    def labels(self) -> list[str]:
        from pyspark.ml.feature import StringIndexerModel

        indexer = self._stage(StringIndexerModel)
        return list(indexer.labels) if indexer else []

    @property
    def label_col(self) -> str | None:
        from pyspark.ml.feature import StringIndexerModel

        indexer = self._stage(StringIndexerModel)
        return indexer.getInputCol() if indexer else None

    @property
    def feature_cols(self) -> list[str]:
        from pyspark.ml.feature import VectorAssembler

        assembler = self._stage(VectorAssembler)
        return list(assembler.getInputCols()) if assembler else []

    def transform(self, frame):
        """Score a typed CSV frame (labels indexed when present, skipped when absent)."""
        return apply_preprocessing(self.pipeline, frame)


def load_model(spark, path: str) -> SavedModel:
    """Load a model folder written by ``hvd-otto train``/``pipeline``, or raise a clear error."""
    from pyspark.ml import PipelineModel

    from ..driver.model import HorovodKerasModel

    fs = store.HadoopFs(spark)
    url = store.to_url(path)
    hint = ("pass the model folder written by 'hvd-otto train' or 'hvd-otto pipeline' "
            "(for the pipeline job: OUT/model)")
    if not fs.is_dir(url):
        raise InputError(f"{path}: no such model folder; {hint}.")
    try:
        metadata = json.loads(fs.read_text(store.join(url, "metadata", "part-00000")))
    except Exception:  # noqa: BLE001 - any unreadable metadata is the same user error
        raise InputError(f"{path}: not a saved Spark model (metadata/ missing or unreadable); "
                         f"{hint}.") from None
    if not metadata.get("class", "").endswith("PipelineModel"):
        raise InputError(f"{path}: holds a {metadata.get('class')}, not a PipelineModel; {hint}.")
    if not store.is_committed(fs, url):
        raise InputError(f"{path}: not a complete saved model (no _SUCCESS: the save was "
                         f"interrupted or this is another kind of folder); {hint}.")
    try:
        pipeline = PipelineModel.load(url)
    except InputError as err:
        raise InputError(f"{path}: a stage could not be loaded: {err}") from None
    except Exception as err:  # noqa: BLE001 - Spark/Keras errors: say where, keep the cause
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: the saved model is damaged or was saved by an incompatible "
                         f"version ({first}); {hint}.") from None
    if not pipeline.stages or not isinstance(pipeline.stages[-1], HorovodKerasModel):
        raise InputError(f"{path}: the PipelineModel does not end with a HorovodKerasModel; "
                         f"{hint}.")
    return SavedModel(pipeline)


def read_csv_for_model(spark, model: SavedModel, path: str, id_col: str = "id",
                       require_label: bool = False):
    """Read and validate a CSV to be scored by ``model``; returns the typed frame.

    Checks that the feature columns are the model's, and (with labels) that every label was
    seen in training, naming file, line and label otherwise.
    """
    from pyspark.sql import functions as F

    from ..data.csv_source import check_feature_columns, feature_columns, load_csv

    label_col = model.label_col
    frame = load_csv(spark, path, id_col, label_col, require_label=require_label)
    check_feature_columns(path, feature_columns(frame, id_col, label_col), model.feature_cols)
    if require_label:
        unseen = (frame.where(~F.col(label_col).isin(model.labels))
                  .groupBy(label_col).agg(F.min(LINE).alias("line"), F.count("*").alias("n"))
                  .orderBy("line").limit(5).collect())
        if unseen:
            listed = ", ".join(f"'{r[label_col]}' ({r['n']:,} rows, first at line {r['line']})"
                               for r in unseen)
            raise InputError(
                f"{path}, column '{label_col}': label(s) the model never saw in training: "
                f"{listed}. The model knows {', '.join(model.labels)}; remove those rows or "
                "retrain with them.")
    elif label_col in frame.columns:
        raise InputError(
            f"{path}, line 1 (header): has a '{label_col}' column, but this "
            "file is scored as unlabelled test data; drop the column, or use 'evaluate' to "
            "score labelled data.")
    return frame


def evaluate_frame(model: SavedModel, frame) -> dict:
    """Log loss, accuracy, per-class figures and confusion of a labelled, typed CSV frame."""
    from .evaluate import evaluate

    return evaluate(model.transform(frame), model.labels)


def write_evaluation(fs: store.HadoopFs, folder_url: str, figures: dict,
                     history: list[dict]) -> list[str]:
    """Write ``metrics.json``, ``confusion_matrix.png`` and ``learning_curve.png`` into a folder."""
    from .evaluate import save_plots

    fs.mkdirs(folder_url)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for local in save_plots(figures, history, tmp):
            target = store.join(folder_url, os.path.basename(local))
            fs.copy_from_local(local, target)
            written.append(target)
    target = store.join(folder_url, "metrics.json")
    fs.write_text(target, json.dumps(figures, indent=2))
    return [target, *written]


def write_submission(fs: store.HadoopFs, model: SavedModel, frame, url: str,
                     id_col: str = "id", overwrite: bool = False) -> None:
    """Score ``frame`` into Kaggle's CSV (``id`` then one probability per class), in input order.

    Spark writes it (sorted by input line, one part file) into a hidden staging folder beside
    ``url`` and the part file is renamed to ``url``: the driver never holds the rows, so memory
    does not grow with the file, and a crash leaves no file under the final name.
    """
    from pyspark import StorageLevel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    store.check_output(fs, url, overwrite, folder=False)
    probs = vector_to_array(F.col("probability"))
    columns = [F.col(id_col)] + [F.format_string("%.6f", probs[i]).alias(label)
                                 for i, label in enumerate(model.labels)]
    # Scored once, in parallel, and kept (spilling to disk) for the sort: orderBy samples its
    # input first, which would otherwise run the model twice.
    scored = model.transform(frame).select(LINE, *columns).persist(StorageLevel.MEMORY_AND_DISK)
    staging = store.staging_url(url)
    try:
        (scored.orderBy(LINE).drop(LINE).coalesce(1).write.option("header", True).option("quote", '"')
         .option("escape", '"').csv(staging))
        part = next(p for p in fs.list(staging) if p.rsplit("/", 1)[-1].startswith("part-"))
        store.commit(fs, part, url, overwrite)
    finally:
        scored.unpersist()
        fs.delete(staging)
