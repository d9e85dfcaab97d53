"""``HorovodKerasModel``: the fitted Keras classifier as a Spark ML Transformer.

``transform`` predicts in Arrow batches through a pandas UDF, with the model loaded once per
Python worker (on the task's GPU when it has one).
"""

from __future__ import annotations

import functools
import uuid
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark.ml import Model
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter

from ..common.errors import InputError
from .params import HorovodKerasModelParams


class HorovodKerasModel(Model, HorovodKerasModelParams, MLReadable, MLWritable):
    """A fitted Keras classifier as a Spark ML Transformer.

    ``transform`` adds ``probabilityCol`` (Vector) and ``predictionCol`` (double, the argmax),
    scoring Arrow batches with the model cached per Python worker (GPU when the task has one).
    """

    def __init__(self, model_bytes: bytes | None = None, history: list | None = None,
                 summary: dict | None = None):
        super().__init__()
        self._model_bytes = model_bytes
        self._history = history or []
        self._summary = summary or {}

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

    def _n_classes(self) -> int:
        """Width of the model's output (from the fit's summary, else from the model itself)."""
        n_classes = self._summary.get("n_classes")
        if not n_classes:
            n_classes = int(self.keras_model().output_shape[-1])
            self._summary["n_classes"] = n_classes
        return n_classes

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf
        from pyspark.sql.types import FloatType, StructField, StructType

        from ..common.keras_objects import keyed_custom_objects
        from ..data.prepare import float_array

        if self.getFeaturesCol() not in dataset.columns:
            raise InputError(f"transform(): no column '{self.getFeaturesCol()}' in the DataFrame"
                             f" (columns: {dataset.columns}).")
        fields = [f"p{i}" for i in range(self._n_classes())]
        broadcast = dataset.sparkSession.sparkContext.broadcast(self._model_bytes)
        load = functools.partial(worker_predict_fn, model_digest(self._model_bytes), broadcast,
                                 keyed_custom_objects(self.getCustomObjects()))
        batch_size = self.getPredictBatchSize()

        def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
            return score_batches(batches, load(), batch_size, fields)

        # A struct of float columns comes back from Python as whole numpy columns (an array
        # column would be one Python object per row each way).
        predict = pandas_udf(score, StructType([StructField(f, FloatType()) for f in fields]))
        predict = predict.asNondeterministic()  # evaluated once, not once per use below
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


def score_batches(batches: Iterator[pd.Series], predict: Callable[[np.ndarray], np.ndarray],
                  batch_size: int, fields: list[str]) -> Iterator[pd.DataFrame]:
    """Score each Arrow batch (a Series of feature arrays) in chunks of ``batch_size`` rows;
    yield one float32 column per class, named ``fields``."""
    for batch in batches:
        if batch.empty:
            yield pd.DataFrame({f: pd.Series(dtype=np.float32) for f in fields})
            continue
        x = np.stack(batch.to_numpy()).astype(np.float32, copy=False)
        probs = np.concatenate([predict(x[i:i + batch_size])
                                for i in range(0, len(x), batch_size)])
        if probs.ndim != 2 or probs.shape[1] != len(fields):
            raise ValueError(f"the model returned predictions of shape {probs.shape} for "
                             f"{len(x)} rows; expected ({len(x)}, {len(fields)})")
        yield pd.DataFrame(probs.astype(np.float32, copy=False), columns=fields)


#: Predict functions built in this Python worker, by the digest of the model's bytes. Spark
#: reuses its Python workers (spark.python.worker.reuse), so a worker loads and traces a model
#: once, not on every ``transform``.
_PREDICT_FNS: dict[str, object] = {}


def model_digest(model_bytes: bytes) -> str:
    """The key of a model in :data:`_PREDICT_FNS`."""
    import hashlib

    return hashlib.sha256(model_bytes).hexdigest()


def worker_predict_fn(digest: str, broadcast, custom_objects: dict):
    """This Python worker's predict function for the broadcast model, built once: numpy alone
    for a plain float32 MLP on a CPU task (:mod:`~hvd_otto.common.numpy_forward`), else a
    traced TensorFlow function, on the task's GPU when it has one. Module-level, so that tasks
    pickle it by reference and share this module's cache."""
    cached = _PREDICT_FNS.get(digest)
    if cached is not None:
        return cached
    from pyspark import TaskContext

    from ..common.devices import spark_task_gpus

    context = TaskContext.get()
    threads = context.cpus() if context else None
    gpus = spark_task_gpus()
    plain = not gpus and not custom_objects  # custom objects may redefine what a name means
    predict = _numpy_predict_fn(broadcast.value, threads) if plain else None
    if predict is None:
        predict = _tensorflow_predict_fn(broadcast.value, custom_objects, gpus, threads)
    _PREDICT_FNS.clear()  # one model per worker at a time: bounded memory
    _PREDICT_FNS[digest] = predict
    return predict


def _numpy_predict_fn(model_bytes: bytes, threads: int | None):
    """numpy inference of a plain MLP, its BLAS held to the task's cores; None otherwise."""
    from ..common.numpy_forward import numpy_forward

    forward = numpy_forward(model_bytes)
    if forward is not None and threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")  # for this worker process
    return forward


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
