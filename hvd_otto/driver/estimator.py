"""``HorovodKerasEstimator``: data-parallel Keras training as a Spark ML Estimator.

``fit`` writes the DataFrame as Petastorm-ready Parquet into a run folder of the store,
launches ``numProc`` Horovod ranks as Spark tasks (through a :class:`Launcher`, by default
``horovod.spark.run``) and returns a :class:`HorovodKerasModel` holding rank 0's best weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter

from ..common import fs as store
from ..common.defaults import COMPRESSIONS, USE_GPU_CHOICES
from ..common.errors import InputError, Interrupted, error_summary
from ..common.keras_objects import (
    keyed_custom_objects,
    loss_spec,
    metrics_spec,
    optimizer_learning_rate,
    optimizer_spec,
)
from ..common.rank_config import FaultSpec, RankConfig
from ..common.run_folder import RunFolder, RunStore
from ..common.signals import StopSignals
from .model import HorovodKerasModel
from .params import HorovodKerasEstimatorParams
from .training_run import (
    RetryPolicy,
    check_run_matches,
    choose_run,
    finish_run,
    run_with_retries,
    summarise,
)

log = logging.getLogger(__name__)


class HorovodKerasEstimator(Estimator, HorovodKerasEstimatorParams, MLReadable, MLWritable):
    """Train a Keras classifier data-parallel on ``numProc`` Horovod ranks launched by Spark.

    Input: a features column (Vector or numeric array) and a label column holding class
    indices 0..K-1 (what ``StringIndexer`` produces). Output: :class:`HorovodKerasModel`.
    Every Param, its default and its doc: ``explainParams()`` (declared in
    ``hvd_otto.common.defaults``). Bring your own model with ``model``, ``optimizer``,
    ``loss``, ``metrics``, ``callbacks`` and ``customObjects`` (README, "Bring your own model").
    """

    @keyword_only
    def __init__(self, **kwargs):
        super().__init__()
        self._launcher_factory = None
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "HorovodKerasEstimator":
        """Set any params by keyword, like other pyspark.ml estimators."""
        return self._set(**self._input_kwargs)

    def setLauncher(self, factory) -> "HorovodKerasEstimator":
        """Use ``factory(spark_context)`` instead of ``horovod.spark.run`` to start the ranks
        (a seam for tests and for other launchers; not a Param, not persisted)."""
        self._launcher_factory = factory
        return self

    def _launcher(self, sc):
        from .launcher import HorovodSparkLauncher

        return (self._launcher_factory or HorovodSparkLauncher)(sc)

    # --- checks ---------------------------------------------------------------------------------

    def _check_params(self) -> None:
        from .tracking import require_mlflow, tracking_uri

        optimizer_spec(self.getOptimizer())  # each raises a clear InputError
        loss_spec(self.getLoss())
        metrics_spec(self.getMetrics())
        if self.getUseGpu() not in USE_GPU_CHOICES:
            raise InputError(f"useGpu must be one of {USE_GPU_CHOICES}, got '{self.getUseGpu()}'.")
        if self.getGradientCompression() not in COMPRESSIONS:
            raise InputError(f"gradientCompression must be one of {COMPRESSIONS}, got "
                             f"'{self.getGradientCompression()}'.")
        for name in ("numProc", "epochs", "batchSize", "backwardPassesPerStep"):
            if self.getOrDefault(name) < 1:
                raise InputError(f"{name} must be at least 1, got {self.getOrDefault(name)}.")
        if self.getAllreduceGroups() < 0:
            raise InputError(f"allreduceGroups must be 0 or more, got {self.getAllreduceGroups()}.")
        if not 0 <= self.getValidationFraction() < 1:
            raise InputError("validationFraction must be in [0, 1).")
        given = [name for name in ("model", "modelConfig", "modelFile")
                 if self.isDefined(name) and self.getOrDefault(name) is not None]
        if len(given) > 1:
            raise InputError(f"set one of model, modelConfig and modelFile, not both "
                             f"{' and '.join(given)}.")
        _check_callbacks(self.getCallbacks())
        custom = self.getCustomObjects()
        if custom is not None and (not isinstance(custom, dict)
                                   or not all(isinstance(k, str) for k in custom)):
            raise InputError("customObjects must be a dict of name → class or function.")
        require_mlflow(tracking_uri(self.getTrackingUri()))

    def _model_spec(self) -> dict:
        from ..common.keras_model import user_model_bytes

        if self.getModel() is not None:
            return {"kind": "keras", "bytes": user_model_bytes(
                self.getModel(), keyed_custom_objects(self.getCustomObjects()))}
        if self.getModelConfig():
            try:
                json.loads(self.getModelConfig())
            except ValueError as err:
                raise InputError(f"modelConfig is not valid JSON ({err}).") from None
            return {"kind": "json", "json": self.getModelConfig()}
        if self.getModelFile():
            path = self.getModelFile()
            if not os.path.isfile(path) or not path.endswith(".keras"):
                raise InputError(f"modelFile {path}: not a .keras file; save it with model.save().")
            with open(path, "rb") as f:
                return {"kind": "keras", "bytes": f.read()}
        return {"kind": "mlp", "hidden": list(self.getHiddenLayers()),
                "dropout": self.getDropout(), "batch_norm": self.getBatchNorm(),
                "input_dropout": self.getInputDropout()}

    def _check_columns(self, dataset) -> None:
        for col in (self.getFeaturesCol(), self.getLabelCol(), self.getValidationCol()):
            if col is not None and col not in dataset.columns:
                raise InputError(f"fit(): no column '{col}' in the DataFrame "
                                 f"(columns: {dataset.columns}); set featuresCol/labelCol"
                                 f"/validationCol.")

    def _n_classes(self, dataset) -> int:
        """Check the labels are class indices; the number of classes."""
        from pyspark.sql import functions as F

        label = self.getLabelCol()
        stats = dataset.agg(F.count(F.lit(1)).alias("n"), F.max(label).alias("max"),
                            F.min(label).alias("min")).first()
        if stats["n"] == 0:
            raise InputError("fit(): the DataFrame is empty.")
        if stats["min"] < 0 or stats["max"] != int(stats["max"]):
            raise InputError(f"fit(): '{label}' must hold class indices 0..K-1 "
                             f"(found min {stats['min']}, max {stats['max']}); use StringIndexer.")
        return int(stats["max"]) + 1

    # --- fit ------------------------------------------------------------------------------------

    def _fit(self, dataset):
        from ..common.preflight import check_executor_python
        from .launcher import wait_for_task_slots

        self._check_params()
        self._check_columns(dataset)
        model_spec = self._model_spec()  # a model that does not load is an error before Spark
        fit_started = time.time()
        sc = dataset.sparkSession.sparkContext
        check_executor_python(sc)  # before any data or rank
        launcher = self._launcher(sc)
        num_proc = self.getNumProc()
        wait_for_task_slots(launcher.task_slots, num_proc, self.getStartTimeout(),
                            launcher.is_local, launcher.describe())
        if not self.getStorePath() and not launcher.is_local:
            raise InputError("storePath (--store) must be set on a cluster: a folder the "
                             "driver and every executor can read and write (NFS or another "
                             "shared mount); the default temporary folder exists only on the "
                             "driver.")
        n_classes = self._n_classes(dataset)
        _check_model_output(model_spec, n_classes, keyed_custom_objects(self.getCustomObjects()))
        temp_store = None if self.getStorePath() else tempfile.mkdtemp(prefix="hvd-otto-store-")
        try:
            with StopSignals(on_stop=lambda: _stop(launcher, sc)) as signals:
                return self._train(dataset, launcher, temp_store, (n_classes, model_spec),
                                   fit_started, signals)
        finally:  # nobody asked to keep a temporary store, whatever happened
            if temp_store:
                shutil.rmtree(temp_store, ignore_errors=True)

    def _train(self, dataset, launcher, temp_store: str | None, target: tuple[int, dict],
               fit_started: float, signals: StopSignals) -> HorovodKerasModel:
        """Stage the data in a run folder, run the ranks with retries, return the model."""
        from ..rank.entry import train_rank

        num_proc = self.getNumProc()
        run_store = RunStore(self._store_dir(self.getStorePath() or temp_store))
        run_store.check_writable()
        run, resumed = choose_run(run_store, self.getResume(), bool(self.getStorePath()))
        fs = store.HadoopFs(dataset.sparkSession)
        fs.delete(run.data_url)  # left by a killed driver
        marks = {"staging_started": time.time()}
        try:
            config = self._stage_data(dataset, run, target, resumed,
                                      launcher.rank_cpus(num_proc))
            marks["staged"] = time.time()
            check_run_matches(run, config, num_proc)
            log.info("training on %d ranks, run folder %s%s", num_proc, run.url,
                     " (resuming)" if resumed else "")
            policy = RetryPolicy(self.getMaxRetries(), self.getStartTimeout(),
                                 self.getVerbose() > 0, stopped_by=lambda: signals.received)
            results, attempts = run_with_retries(launcher, train_rank, config, num_proc, policy)
        except Interrupted as err:  # say what a resume would continue from
            err.run = run.url if self.getStorePath() and run.load_checkpoint() else None
            raise
        finally:  # the Parquet copy is only for this fit; checkpoints and history stay
            fs.delete(run.data_url)
        summary = summarise(results, config, num_proc, attempts, fit_started, time.time(), marks)
        finish_run(run, results[0]["history"], summary)
        if temp_store:
            summary["run"] = None
        self._track(results[0], summary)
        model = HorovodKerasModel(model_bytes=results[0]["model"],
                                  history=results[0]["history"], summary=summary)
        self._copyValues(model)
        return model

    def _track(self, result: dict, summary: dict) -> None:
        """Record the fit as one MLflow run when tracking is on; its id goes in the summary."""
        from .tracking import experiment_name, record_fit, tracked_params, tracking_uri

        uri = tracking_uri(self.getTrackingUri())
        if uri:
            record_fit(summary, uri, experiment_name(self.getExperimentName()),
                       tracked_params(self), result["history"], result["model"])

    @staticmethod
    def _store_dir(path: str) -> str:
        url = store.to_url(path)
        local = store.local_path(url)
        if local is None:
            raise InputError(f"storePath (--store) {url}: the ranks write checkpoints with local file "
                             "I/O; use a local or shared (NFS) path, or file://.")
        return local

    def _stage_data(self, dataset, run: RunFolder, target: tuple[int, dict], resumed: bool,
                    cpu_threads: int) -> RankConfig:
        """Write the train (and validation) split as Petastorm Parquet; the ranks' config."""
        from pyspark.sql import functions as F

        from ..data.prepare import to_petastorm_frame

        features, label = self.getFeaturesCol(), self.getLabelCol()
        row_groups = self.getNumProc() * 4
        # One evaluation of the upstream plan feeds both splits (randomSplit on a recomputed,
        # non-deterministic plan could overlap or lose rows). Only the columns the ranks read
        # are kept: the cache and randomSplit's sort then skip the input's other columns.
        needed = dict.fromkeys([features, label, self.getValidationCol()])  # in order, unique
        dataset = dataset.select(*[c for c in needed if c]).persist()
        if self.getValidationCol():
            is_val = F.col(self.getValidationCol()).cast("boolean")
            splits = {"train": dataset.where(~is_val), "validation": dataset.where(is_val)}
        elif self.getValidationFraction() > 0:
            fraction = self.getValidationFraction()
            train_df, val_df = dataset.randomSplit([1 - fraction, fraction], self.getSeed())
            splits = {"train": train_df, "validation": val_df}
        else:
            splits = {"train": dataset}
        for name, frame in splits.items():
            to_petastorm_frame(frame, row_groups, features, label).write.parquet(
                run.split_url(name))
        dataset.unpersist()
        spark = dataset.sparkSession
        n_features = len(spark.read.parquet(run.split_url("train")).first()["features"])
        n_classes, model_spec = target
        optimizer = optimizer_spec(self.getOptimizer())
        return RankConfig(
            run_dir=run.path, train_url=run.split_url("train"),
            val_url=run.split_url("validation") if "validation" in splits else None,
            n_features=n_features, n_classes=n_classes, model=model_spec,
            optimizer=optimizer, loss=loss_spec(self.getLoss()),
            metrics=tuple(metrics_spec(self.getMetrics())),
            learning_rate=optimizer_learning_rate(optimizer, self.getLearningRate()),
            batch_size=self.getBatchSize(), epochs=self.getEpochs(),
            patience=self.getEarlyStoppingPatience(), warmup_epochs=self.getWarmupEpochs(),
            lr_decay_patience=self.getLrDecayPatience(), seed=self.getSeed(),
            use_gpu=self.getUseGpu(), mixed_precision=self.getMixedPrecision(),
            compression=self.getGradientCompression(),
            backward_passes=self.getBackwardPassesPerStep(),
            allreduce_groups=self.getAllreduceGroups(),
            cache_limit_bytes=self.getCacheLimitMb() * 1024 * 1024, cpu_threads=cpu_threads,
            resume=resumed, custom_objects=keyed_custom_objects(self.getCustomObjects()),
            callbacks=tuple(self.getCallbacks() or ()), fault=FaultSpec.from_env(),
        )

    # --- persistence ----------------------------------------------------------------------------

    def write(self) -> MLWriter:
        """Params as Spark metadata, Keras objects as their configs, ``model`` as ``.keras``."""
        from .persistence import HorovodKerasEstimatorWriter

        return HorovodKerasEstimatorWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        from .persistence import HorovodKerasEstimatorReader

        return HorovodKerasEstimatorReader(cls)


def _check_callbacks(callbacks) -> None:
    if callbacks is None:
        return
    import tensorflow as tf

    if isinstance(callbacks, tf.keras.callbacks.Callback) or not isinstance(callbacks,
                                                                             (list, tuple)):
        raise InputError("callbacks must be a list of tf.keras.callbacks.Callback objects.")
    for callback in callbacks:
        if not isinstance(callback, tf.keras.callbacks.Callback):
            raise InputError(f"callbacks: {callback!r} is not a tf.keras.callbacks.Callback.")


def _check_model_output(spec: dict, n_classes: int, custom_objects: dict) -> None:
    """A user's model must output one probability per class."""
    if spec["kind"] == "mlp":
        return
    from ..common.keras_model import model_from_spec

    try:
        model = model_from_spec(spec, 1, n_classes, custom_objects)
    except Exception as err:  # noqa: BLE001 - any failure is the same user error
        first = error_summary(err)
        raise InputError(f"the model does not load ({first}).") from None
    shape = model.output_shape
    if not isinstance(shape, tuple) or shape[-1] != n_classes:
        raise InputError(f"the model's output has shape {shape}; the labels have {n_classes} "
                         f"classes: end the model in Dense({n_classes}, activation='softmax').")


def _stop(launcher, sc) -> None:
    """On SIGINT/SIGTERM: stop the ranks and every Spark job of this application."""
    launcher.cancel()
    sc.cancelAllJobs()
