"""``HorovodKerasModel``: the fitted Keras classifier as a Spark ML Transformer.

``transform`` predicts in Arrow batches through a pandas UDF, with the model loaded once per
Python worker (on the task's GPU when it has one).
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.ml import Model
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter

from ..common.errors import InputError
from .params import HorovodKerasModelParams

log = logging.getLogger(__name__)


class HorovodKerasModel(Model, HorovodKerasModelParams, MLReadable, MLWritable):
    """A fitted Keras classifier as a Spark ML Transformer.

    ``transform`` adds ``probabilityCol`` (Vector) and ``predictionCol`` (double, the argmax),
    scoring Arrow batches with the model cached per Python worker: numpy for a plain MLP on a
    host without a GPU, else TensorFlow (on the task's GPU, or the node's first visible one).
    """

    def __init__(self, model_bytes: bytes | None = None, history: list | None = None,
                 summary: dict | None = None):
        super().__init__()
        self._model_bytes = model_bytes
        self._history = history or []
        self._summary = summary or {}
        self._output_width_found: int | None = None  # when the summary lacks n_classes

    def getHistory(self) -> list[dict]:
        """Per-epoch loss, accuracy, val_loss, val_accuracy, seconds and samples/s."""
        return list(self._history)

    def getSummary(self) -> dict:
        """Facts of the training run: ranks, devices, best epoch, launch and fit seconds."""
        return dict(self._summary)

    def getModelBytes(self) -> bytes:
        """The trained model as the bytes of a ``.keras`` file."""
        return self._model_bytes

    def keras_model(self):
        """The trained model as a ``tf.keras`` model (loaded with safe_mode)."""
        from ..common.keras_model import model_from_bytes
        from ..common.keras_objects import keyed_custom_objects

        return model_from_bytes(self._model_bytes, keyed_custom_objects(self.getCustomObjects()))

    def _output_width(self) -> int:
        """Classes the model predicts: from the fit's summary, else read off the model once."""
        if self._summary.get("n_classes"):
            return int(self._summary["n_classes"])
        if self._output_width_found is None:
            self._output_width_found = int(self.keras_model().output_shape[-1])
        return self._output_width_found

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from ..common.keras_objects import keyed_custom_objects
        from ..data.prepare import float_array

        if self.getFeaturesCol() not in dataset.columns:
            raise InputError(f"transform(): no column '{self.getFeaturesCol()}' in the DataFrame"
                             f" (columns: {dataset.columns}).")
        fields = [f"p{i}" for i in range(self._output_width())]
        broadcast = dataset.sparkSession.sparkContext.broadcast(self._model_bytes)
        load = functools.partial(worker_predict_fn, model_digest(self._model_bytes), broadcast,
                                 keyed_custom_objects(self.getCustomObjects()))
        predict = scoring_udf(load, self.getPredictBatchSize(), fields,
                              self._summary.get("n_features"))
        tmp = f"_proba_{uuid.uuid4().hex[:8]}"
        scored = dataset.withColumn(tmp, predict(float_array(dataset, self.getFeaturesCol())))
        scored = scored.withColumn(tmp, F.array(*[F.col(tmp)[f] for f in fields]))
        return scored.withColumn(
            self.getProbabilityCol(), array_to_vector(F.col(tmp))
        ).withColumn(
            self.getPredictionCol(),
            F.expr(f"CAST(array_position(`{tmp}`, array_max(`{tmp}`)) - 1 AS DOUBLE)"),
        ).drop(tmp)

    # --- persistence ---------------------------------------------------------------------------

    def write(self) -> MLWriter:
        from .persistence import HorovodKerasModelWriter

        return HorovodKerasModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        from .persistence import HorovodKerasModelReader

        return HorovodKerasModelReader(cls)


def scoring_udf(load: Callable[[], Callable[[np.ndarray], np.ndarray]], batch_size: int,
                fields: list[str], n_features: int | None = None):
    """The pandas UDF of ``transform``: an ``array<float>`` column in, a struct of one float
    column per class (``fields``) out, evaluated once per row (non-deterministic)."""
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import FloatType, StructField, StructType

    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        return score_batches(batches, load, batch_size, fields, n_features)

    # A struct of float columns comes back from Python as whole numpy columns (an array
    # column would be one Python object per row each way).
    udf = pandas_udf(score, StructType([StructField(f, FloatType()) for f in fields]))
    return udf.asNondeterministic()  # evaluated once, not once per use of its fields


def score_batches(batches: Iterator[pd.Series],
                  load: Callable[[], Callable[[np.ndarray], np.ndarray]], batch_size: int,
                  fields: list[str], n_features: int | None = None) -> Iterator[pd.DataFrame]:
    """Score each Arrow batch (a Series of feature arrays) in chunks of ``batch_size`` rows;
    yield one float32 column per class, named ``fields``. ``load()`` gives the predict
    function, called at the first non-empty batch (an empty partition loads nothing)."""
    predict = None
    for batch in batches:
        if batch.empty:
            yield pd.DataFrame({f: pd.Series(dtype=np.float32) for f in fields})
            continue
        x = _feature_matrix(batch, n_features)
        if predict is None:
            predict = load()
        probs = np.concatenate([predict(x[i:i + batch_size])
                                for i in range(0, len(x), batch_size)])
        if probs.ndim != 2 or probs.shape[1] != len(fields):
            raise ValueError(f"the model returned predictions of shape {probs.shape} for "
                             f"{len(x)} rows; expected ({len(x)}, {len(fields)})")
        yield pd.DataFrame(probs.astype(np.float32, copy=False), columns=fields)


def _feature_matrix(batch: pd.Series, n_features: int | None) -> np.ndarray:
    """A batch's feature arrays as one float32 matrix, or a clear error."""
    missing = int(batch.isna().sum())
    if missing:
        raise ValueError(f"transform(): {missing} row(s) of this batch have no features (null);"
                         " drop or fill them before transform()")
    try:
        x = np.stack(batch.to_numpy())
    except ValueError:  # rows of different lengths: the per-row lengths only for the message
        x = None
    if x is None or (n_features and x.shape[1] != n_features):
        lengths = sorted({len(v) for v in batch})
        expected = f"; the model was trained on {n_features}" if n_features else ""
        raise ValueError(f"transform(): rows have {lengths} feature values{expected}")
    return x.astype(np.float32, copy=False)


#: Predict functions built in this Python worker, by the digest of the model's bytes. Spark
#: reuses its Python workers (spark.python.worker.reuse), so a worker loads and traces a model
#: once, not on every ``transform``.
_PREDICT_FNS: dict[str, object] = {}


def model_digest(model_bytes: bytes) -> str:
    """The key of a model in :data:`_PREDICT_FNS`."""
    import hashlib

    return hashlib.sha256(model_bytes).hexdigest()


def worker_predict_fn(digest: str, broadcast, custom_objects: dict):
    """This Python worker's predict function for the broadcast model, built once.

    numpy alone for a plain float32 MLP (:mod:`~hvd_otto.common.numpy_forward`) on a host
    without an NVIDIA GPU and with no custom objects (they may redefine what a name means);
    else a traced TensorFlow function, on the task's GPU, or the node's first visible one.
    Module-level, so that tasks pickle it by reference and share this module's cache.
    """
    key = f"{digest}/{'custom' if custom_objects else 'plain'}"
    cached = _PREDICT_FNS.get(key)
    if cached is not None:
        return cached
    from pyspark import TaskContext

    from ..common.devices import host_has_nvidia_gpu, spark_task_gpus

    context = TaskContext.get()
    threads = context.cpus() if context else None
    gpus = spark_task_gpus()
    on_cpu = not gpus and not host_has_nvidia_gpu()
    predict = _numpy_predict_fn(broadcast.value, threads) if on_cpu and not custom_objects \
        else None
    if predict is None:
        predict = _tensorflow_predict_fn(broadcast.value, custom_objects, gpus, threads)
    _PREDICT_FNS.clear()  # one model per worker at a time: bounded memory
    _PREDICT_FNS[key] = predict
    return predict


def _numpy_predict_fn(model_bytes: bytes, threads: int | None):
    """numpy inference of a plain MLP, its BLAS held to the task's cores while it predicts;
    None when the model is not one, or numpy inference is not installed on this worker."""
    try:
        from threadpoolctl import ThreadpoolController

        from ..common.numpy_forward import numpy_forward

        forward = numpy_forward(model_bytes)
    except ImportError as err:
        log.info("scoring with TensorFlow: numpy inference needs %s", err.name)
        return None
    if forward is None or not threads:
        return forward
    controller = ThreadpoolController()

    def predict(features: np.ndarray) -> np.ndarray:
        with controller.limit(limits=threads, user_api="blas"):
            return forward(features)

    return predict


def _tensorflow_predict_fn(model_bytes: bytes, custom_objects: dict, gpus: list[str],
                           threads: int | None):
    """The model loaded in TensorFlow and traced once, pinned to the task's GPU or cores."""
    import tensorflow as tf

    from ..common.devices import pin_device
    from ..common.keras_model import model_from_bytes
    from ..common.quiet import quiet_worker_warnings

    quiet_worker_warnings()
    try:
        pin_device(gpus, 0, "auto", cpu_threads=threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this worker: keep its settings
    model = model_from_bytes(model_bytes, custom_objects)
    # A traced graph: about 1.3x the rows/s of eager calls on a CPU core.
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                          autograph=False)
    return lambda features: forward(features).numpy()
