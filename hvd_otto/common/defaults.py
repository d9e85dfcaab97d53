"""Every training setting, declared once: name, default, type and doc.

The Estimator's Params (with their defaults, ``setX``/``getX`` and ``explainParams`` docs)
are generated from :data:`TRAINING_PARAMS`; the CLI's option defaults, the MLP builder and
the benchmarks read :func:`default`. Change a default here and everything follows.
No pyspark or TensorFlow import: the ranks and the unit tests read this module too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adam", "sgd", "adadelta", "rmsprop")
USE_GPU_CHOICES = ("auto", "true", "false")
COMPRESSIONS = ("none", "fp16")


@dataclass(frozen=True)
class ParamSpec:
    """One Param: ``kind`` is int, float, str, bool, list_int or object (any Python value,
    checked by the Estimator); ``default`` None = unset."""

    name: str
    kind: str
    default: Any
    doc: str


#: Params that both the Estimator and the fitted Model carry (besides pyspark's shared
#: featuresCol, labelCol, predictionCol and probabilityCol).
MODEL_PARAMS = (
    ParamSpec("predictBatchSize", "int", 4096, "rows per Arrow batch in transform()"),
    ParamSpec("customObjects", "object", None,
              "dict of custom Keras classes or functions by name, used wherever the model is "
              "loaded (saved as import paths, never pickled)"),
)

#: The Estimator's own Params (besides the shared ones and pyspark's ``seed``).
TRAINING_PARAMS = (
    ParamSpec("numProc", "int", 2, "number of Horovod ranks (concurrent Spark tasks)"),
    ParamSpec("epochs", "int", 40, "maximum number of epochs"),
    ParamSpec("batchSize", "int", 128, "batch size per rank"),
    ParamSpec("learningRate", "float", 0.001,
              "learning rate for one rank of a named optimizer; scaled by numProc"),
    ParamSpec("optimizer", "object", "adam",
              f"optimizer: one of {', '.join(OPTIMIZERS)}, or a tf.keras optimizer object (its "
              "class and config travel to the ranks; its learning rate is the one-rank rate, "
              "scaled by numProc)"),
    ParamSpec("loss", "object", "sparse_categorical_crossentropy",
              "loss: a Keras name or a tf.keras.losses.Loss object"),
    ParamSpec("metrics", "object", ["accuracy"],
              "list of Keras metric names or tf.keras.metrics.Metric objects"),
    ParamSpec("callbacks", "object", None,
              "list of Keras callbacks run on every rank (not saved with the Estimator)"),
    ParamSpec("validationFraction", "float", 0.1,
              "fraction of rows held out for validation (0 = none)"),
    ParamSpec("validationCol", "str", None,
              "boolean column marking validation rows (overrides the fraction)"),
    ParamSpec("earlyStoppingPatience", "int", 4,
              "epochs without improvement before stopping (0 = off)"),
    ParamSpec("warmupEpochs", "int", 1, "epochs of learning-rate warm-up (0 = off)"),
    ParamSpec("lrDecayPatience", "int", 1,
              "halve the learning rate after this many epochs without improvement (0 = off)"),
    ParamSpec("storePath", "str", None,
              "folder for run data, checkpoints and history, shared by driver and executors "
              "(required on a cluster; in local mode a temporary folder by default)"),
    ParamSpec("verbose", "int", 1, "0 = quiet, 1 = one line per epoch from rank 0"),
    ParamSpec("useGpu", "str", "auto", f"one of {', '.join(USE_GPU_CHOICES)}"),
    ParamSpec("mixedPrecision", "bool", False, "mixed float16 on GPUs"),
    ParamSpec("gradientCompression", "str", "none",
              f"gradients on the wire: one of {', '.join(COMPRESSIONS)} (fp16 halves the "
              "allreduce bytes; worth it between nodes, not within one)"),
    ParamSpec("backwardPassesPerStep", "int", 1,
              "batches whose gradients each rank accumulates before one allreduce and update "
              "(1 = every batch; N divides the allreduces by N and multiplies the batch of one "
              "update by N)"),
    ParamSpec("allreduceGroups", "int", 1,
              "grouped allreduces of the gradients per step: 1 = all gradients in one (one "
              "negotiation between the ranks per step: fastest for small models and on CPUs); "
              "N = N groups; 0 = one allreduce per gradient, each sent when it is ready "
              "(Horovod's default: lets a large model's communication overlap its backward pass)"),
    ParamSpec("maxRetries", "int", 1,
              "times a failed Horovod run is retried, each time from the last epoch checkpoint"),
    ParamSpec("resume", "bool", False,
              "continue the latest unfinished run in storePath from its last checkpoint "
              "instead of starting a new run"),
    ParamSpec("startTimeout", "int", 60,
              "seconds to wait for numProc Spark task slots and for every rank to join the ring"),
    ParamSpec("cacheLimitMb", "int", 2048,
              "a rank's shard larger than this is streamed from Parquet instead of cached in "
              "memory"),
    ParamSpec("hiddenLayers", "list_int", [512, 512, 512],
              "units of each hidden Dense layer of the default MLP"),
    ParamSpec("dropout", "float", 0.4, "dropout after each hidden layer of the default MLP"),
    ParamSpec("inputDropout", "float", 0.0, "dropout on the inputs of the default MLP"),
    ParamSpec("batchNorm", "bool", False, "batch normalisation in the default MLP"),
    ParamSpec("modelConfig", "str", None,
              "a Keras model as JSON (model.to_json()) instead of the default MLP"),
    ParamSpec("modelFile", "str", None, "a saved .keras model file to train instead of the MLP"),
    ParamSpec("model", "object", None,
              "a tf.keras.Model to train instead of the MLP (Sequential, functional or with "
              "custom layers; it must end in a softmax over the classes)"),
    ParamSpec("trackingUri", "str", None,
              "MLflow tracking URI to record the fit in (default: MLFLOW_TRACKING_URI when "
              "set; 'off' = never)"),
    ParamSpec("experimentName", "str", None,
              "MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, else 'hvd-otto')"),
)

#: Defaults of pyspark's shared params as this project sets them.
SHARED_DEFAULTS = {"featuresCol": "features", "labelCol": "label",
                   "predictionCol": "prediction", "probabilityCol": "probability", "seed": 42}

_ALL = {spec.name: spec.default for spec in (*MODEL_PARAMS, *TRAINING_PARAMS)}
_ALL.update(SHARED_DEFAULTS)


def default(name: str) -> Any:
    """The default of a Param by its name (``default("epochs") == 40``)."""
    value = _ALL[name]
    return list(value) if isinstance(value, list) else value
