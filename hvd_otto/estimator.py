"""``HorovodKerasEstimator`` / ``HorovodKerasModel``: data-parallel Keras training as Spark ML.

``fit`` writes the DataFrame as Petastorm-ready Parquet into a run folder of the store,
launches ``numProc`` Horovod ranks as Spark tasks with ``horovod.spark.run`` and returns a
Transformer holding rank 0's best weights. ``transform`` predicts in Arrow batches through
``predict_batch_udf``, with the model loaded once per Python worker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed,
)
from pyspark.ml.util import (
    DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable, DefaultParamsWriter,
    MLReadable, MLReader, MLWritable, MLWriter,
)

from . import store
from .devices import USE_GPU_CHOICES
from .model import OPTIMIZERS
from .schema import InputError

log = logging.getLogger(__name__)


def _param(name: str, doc: str, converter):
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class _HorovodKerasParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol):
    """Params shared by the Estimator and the Model."""

    predictBatchSize = _param("predictBatchSize", "rows per Arrow batch in transform()",
                              TypeConverters.toInt)

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(featuresCol="features", labelCol="label", predictionCol="prediction",
                         probabilityCol="probability", predictBatchSize=4096)

    def getPredictBatchSize(self) -> int:
        return self.getOrDefault(self.predictBatchSize)


class HorovodKerasEstimator(Estimator, _HorovodKerasParams, HasSeed,
                            DefaultParamsReadable, DefaultParamsWritable):
    """Train a Keras classifier data-parallel on ``numProc`` Horovod ranks launched by Spark.

    Input: a features column (Vector or numeric array) and a label column holding class
    indices 0..K-1 (what ``StringIndexer`` produces). Output: :class:`HorovodKerasModel`.
    """

    numProc = _param("numProc", "number of Horovod ranks (concurrent Spark tasks)",
                     TypeConverters.toInt)
    epochs = _param("epochs", "maximum number of epochs", TypeConverters.toInt)
    batchSize = _param("batchSize", "batch size per rank", TypeConverters.toInt)
    learningRate = _param("learningRate", "learning rate for one rank; scaled by numProc",
                          TypeConverters.toFloat)
    optimizer = _param("optimizer", f"optimizer, one of {', '.join(OPTIMIZERS)}",
                       TypeConverters.toString)
    validationFraction = _param("validationFraction",
                                "fraction of rows held out for validation (0 = none)",
                                TypeConverters.toFloat)
    validationCol = _param("validationCol",
                           "boolean column marking validation rows (overrides the fraction)",
                           TypeConverters.toString)
    earlyStoppingPatience = _param("earlyStoppingPatience",
                                   "epochs without improvement before stopping (0 = off)",
                                   TypeConverters.toInt)
    warmupEpochs = _param("warmupEpochs", "epochs of learning-rate warm-up (0 = off)",
                          TypeConverters.toInt)
    storePath = _param("storePath", "folder for run data, checkpoints and history; must be "
                       "reachable by driver and executors (default: a local temp folder)",
                       TypeConverters.toString)
    verbose = _param("verbose", "0 = quiet, 1 = one line per epoch from rank 0",
                     TypeConverters.toInt)
    useGpu = _param("useGpu", "auto, true or false", TypeConverters.toString)
    mixedPrecision = _param("mixedPrecision", "mixed float16 on GPUs", TypeConverters.toBoolean)
    maxRetries = _param("maxRetries", "times a failed Horovod run is retried, each time "
                        "from the last epoch checkpoint", TypeConverters.toInt)
    resume = _param("resume", "continue the latest unfinished run in storePath from its last "
                    "checkpoint instead of starting a new run", TypeConverters.toBoolean)
    hiddenLayers = _param("hiddenLayers", "units of each hidden Dense layer of the default MLP",
                          TypeConverters.toListInt)
    dropout = _param("dropout", "dropout after each hidden layer of the default MLP",
                     TypeConverters.toFloat)
    inputDropout = _param("inputDropout", "dropout on the inputs of the default MLP",
                          TypeConverters.toFloat)
    batchNorm = _param("batchNorm", "batch normalisation in the default MLP",
                       TypeConverters.toBoolean)
    modelConfig = _param("modelConfig", "a Keras model as JSON (model.to_json()) instead of "
                         "the default MLP", TypeConverters.toString)
    modelFile = _param("modelFile", "a saved .keras model file to train instead of the MLP",
                       TypeConverters.toString)
    lrDecayPatience = _param("lrDecayPatience", "halve the learning rate after this many "
                             "epochs without improvement (0 = off)", TypeConverters.toInt)
    cacheLimitMb = _param("cacheLimitMb", "a rank's shard larger than this is streamed from "
                          "Parquet instead of cached in memory", TypeConverters.toInt)
    startTimeout = _param("startTimeout", "seconds to wait for numProc Spark task slots and "
                          "for every rank to join the ring", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction",
                 probabilityCol="probability", predictBatchSize=4096, numProc=2, epochs=40,
                 batchSize=128, learningRate=0.001, optimizer="adam", validationFraction=0.1,
                 validationCol=None, earlyStoppingPatience=4, warmupEpochs=1, storePath=None,
                 seed=42, verbose=1, useGpu="auto", mixedPrecision=False, maxRetries=1,
                 resume=False, hiddenLayers=(512, 512, 512), dropout=0.4, inputDropout=0.0, batchNorm=False, modelConfig=None,
                 modelFile=None, lrDecayPatience=1, cacheLimitMb=2048, startTimeout=60):
        super().__init__()
        self._setDefault(numProc=2, epochs=40, batchSize=128, learningRate=0.001,
                         optimizer="adam", validationFraction=0.1, earlyStoppingPatience=4,
                         warmupEpochs=1, seed=42, verbose=1, useGpu="auto",
                         mixedPrecision=False, maxRetries=1, resume=False,
                         hiddenLayers=[512, 512, 512],
                         dropout=0.4, inputDropout=0.0, batchNorm=False, lrDecayPatience=1, cacheLimitMb=2048,
                         startTimeout=60)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "HorovodKerasEstimator":
        """Set any params by keyword, like other pyspark.ml estimators."""
        return self._set(**self._input_kwargs)

    # setX / getX, as pyspark.ml estimators have them.
    def setFeaturesCol(self, v): return self._set(featuresCol=v)
    def setLabelCol(self, v): return self._set(labelCol=v)
    def setPredictionCol(self, v): return self._set(predictionCol=v)
    def setProbabilityCol(self, v): return self._set(probabilityCol=v)
    def setPredictBatchSize(self, v): return self._set(predictBatchSize=v)
    def setNumProc(self, v): return self._set(numProc=v)
    def getNumProc(self) -> int: return self.getOrDefault(self.numProc)
    def setEpochs(self, v): return self._set(epochs=v)
    def getEpochs(self) -> int: return self.getOrDefault(self.epochs)
    def setBatchSize(self, v): return self._set(batchSize=v)
    def getBatchSize(self) -> int: return self.getOrDefault(self.batchSize)
    def setLearningRate(self, v): return self._set(learningRate=v)
    def getLearningRate(self) -> float: return self.getOrDefault(self.learningRate)
    def setOptimizer(self, v): return self._set(optimizer=v)
    def getOptimizer(self) -> str: return self.getOrDefault(self.optimizer)
    def setValidationFraction(self, v): return self._set(validationFraction=v)
    def getValidationFraction(self) -> float: return self.getOrDefault(self.validationFraction)
    def setValidationCol(self, v): return self._set(validationCol=v)
    def getValidationCol(self): return self.getOrDefault(self.validationCol) if self.isDefined(self.validationCol) else None
    def setEarlyStoppingPatience(self, v): return self._set(earlyStoppingPatience=v)
    def getEarlyStoppingPatience(self) -> int: return self.getOrDefault(self.earlyStoppingPatience)
    def setWarmupEpochs(self, v): return self._set(warmupEpochs=v)
    def getWarmupEpochs(self) -> int: return self.getOrDefault(self.warmupEpochs)
    def setStorePath(self, v): return self._set(storePath=v)
    def getStorePath(self): return self.getOrDefault(self.storePath) if self.isDefined(self.storePath) else None
    def setVerbose(self, v): return self._set(verbose=v)
    def getVerbose(self) -> int: return self.getOrDefault(self.verbose)
    def setUseGpu(self, v): return self._set(useGpu=v)
    def getUseGpu(self) -> str: return self.getOrDefault(self.useGpu)
    def setMixedPrecision(self, v): return self._set(mixedPrecision=v)
    def getMixedPrecision(self) -> bool: return self.getOrDefault(self.mixedPrecision)
    def setMaxRetries(self, v): return self._set(maxRetries=v)
    def getMaxRetries(self) -> int: return self.getOrDefault(self.maxRetries)
    def setResume(self, v): return self._set(resume=v)
    def getResume(self) -> bool: return self.getOrDefault(self.resume)
    def setHiddenLayers(self, v): return self._set(hiddenLayers=v)
    def getHiddenLayers(self) -> list: return self.getOrDefault(self.hiddenLayers)
    def setDropout(self, v): return self._set(dropout=v)
    def getDropout(self) -> float: return self.getOrDefault(self.dropout)
    def setInputDropout(self, v): return self._set(inputDropout=v)
    def getInputDropout(self) -> float: return self.getOrDefault(self.inputDropout)
    def setBatchNorm(self, v): return self._set(batchNorm=v)
    def getBatchNorm(self) -> bool: return self.getOrDefault(self.batchNorm)
    def setModelConfig(self, v): return self._set(modelConfig=v)
    def getModelConfig(self): return self.getOrDefault(self.modelConfig) if self.isDefined(self.modelConfig) else None
    def setModelFile(self, v): return self._set(modelFile=v)
    def getModelFile(self): return self.getOrDefault(self.modelFile) if self.isDefined(self.modelFile) else None
    def setLrDecayPatience(self, v): return self._set(lrDecayPatience=v)
    def getLrDecayPatience(self) -> int: return self.getOrDefault(self.lrDecayPatience)
    def setCacheLimitMb(self, v): return self._set(cacheLimitMb=v)
    def getCacheLimitMb(self) -> int: return self.getOrDefault(self.cacheLimitMb)
    def setStartTimeout(self, v): return self._set(startTimeout=v)
    def getStartTimeout(self) -> int: return self.getOrDefault(self.startTimeout)

    # --- fit -----------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.getOptimizer() not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS}, got '{self.getOptimizer()}'.")
        if self.getUseGpu() not in USE_GPU_CHOICES:
            raise InputError(f"useGpu must be one of {USE_GPU_CHOICES}, got '{self.getUseGpu()}'.")
        for name in ("numProc", "epochs", "batchSize"):
            if self.getOrDefault(name) < 1:
                raise InputError(f"{name} must be at least 1, got {self.getOrDefault(name)}.")
        if not 0 <= self.getValidationFraction() < 1:
            raise InputError("validationFraction must be in [0, 1).")
        if self.getModelConfig() and self.getModelFile():
            raise InputError("set modelConfig or modelFile, not both.")

    def _model_spec(self) -> dict:
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

    def _fit(self, dataset):
        from pyspark.sql import functions as F

        from .ingest import to_petastorm_frame
        from .worker import parse_fault

        self._check_params()
        spark = dataset.sparkSession
        fit_started = time.time()
        features, label = self.getFeaturesCol(), self.getLabelCol()
        for col in (features, label):
            if col not in dataset.columns:
                raise InputError(f"fit(): no column '{col}' in the DataFrame "
                                 f"(columns: {dataset.columns}); set featuresCol/labelCol.")
        num_proc = self.getNumProc()
        check_task_slots(spark.sparkContext, num_proc, self.getStartTimeout())

        stats = dataset.agg(F.count(F.lit(1)).alias("n"), F.max(label).alias("max"),
                            F.min(label).alias("min")).first()
        if stats["n"] == 0:
            raise InputError("fit(): the DataFrame is empty.")
        if stats["min"] < 0 or stats["max"] != int(stats["max"]):
            raise InputError(f"fit(): '{label}' must hold class indices 0..K-1 "
                             f"(found min {stats['min']}, max {stats['max']}); use StringIndexer.")
        n_classes = int(stats["max"]) + 1

        temp_store = None if self.getStorePath() else tempfile.mkdtemp(prefix="hvd-otto-store-")
        store_url = store.to_url(self.getStorePath() or temp_store)
        store_dir = store.local_path(store_url)
        if store_dir is None:
            raise InputError(f"storePath {store_url}: the ranks write checkpoints with local file "
                             "I/O; use a local or shared (NFS) path, or file://.")
        check_writable(store_dir)
        run_dir, resumed = self._run_folder(store_dir)
        run_url = store.to_url(run_dir)
        store.HadoopFs(spark).delete(store.join(run_url, "data"))  # left by a killed driver
        row_groups = num_proc * 4
        # One evaluation of the upstream plan feeds both splits (randomSplit on a recomputed,
        # non-deterministic plan could overlap or lose rows).
        dataset = dataset.persist()
        val_col = self.getValidationCol()
        if val_col:
            is_val = F.col(val_col).cast("boolean")
            train_df, val_df = dataset.where(~is_val), dataset.where(is_val)
        elif self.getValidationFraction() > 0:
            train_df, val_df = dataset.randomSplit(
                [1 - self.getValidationFraction(), self.getValidationFraction()], self.getSeed())
        else:
            train_df, val_df = dataset, None
        train_url = store.join(run_url, "data", "train")
        to_petastorm_frame(train_df, row_groups, features, label).write.parquet(train_url)
        val_url = None
        if val_df is not None:
            val_url = store.join(run_url, "data", "validation")
            to_petastorm_frame(val_df, row_groups, features, label).write.parquet(val_url)
        dataset.unpersist()
        n_features = len(spark.read.parquet(train_url).first()["features"])

        config = {
            "run_dir": run_dir, "train_url": train_url, "val_url": val_url,
            "n_features": n_features, "n_classes": n_classes, "model": self._model_spec(),
            "optimizer": self.getOptimizer(), "learning_rate": self.getLearningRate(),
            "batch_size": self.getBatchSize(), "epochs": self.getEpochs(),
            "patience": self.getEarlyStoppingPatience(), "warmup_epochs": self.getWarmupEpochs(),
            "lr_decay_patience": self.getLrDecayPatience(),
            "seed": self.getSeed(), "use_gpu": self.getUseGpu(),
            "mixed_precision": self.getMixedPrecision(),
            "cache_limit_bytes": self.getCacheLimitMb() * 1024 * 1024,
            "resume": resumed, "fault": _fault_hook(parse_fault),
            "start_timeout": self.getStartTimeout(),
        }
        check_run_matches(run_dir, config, num_proc)
        log.info("training on %d ranks, run folder %s%s", num_proc, run_url,
                 " (resuming)" if resumed else "")
        try:
            results, attempts = self._run_with_retries(spark.sparkContext, config, num_proc)
        finally:  # the Parquet copy is only for this fit; checkpoints and history stay
            store.HadoopFs(spark).delete(store.join(run_url, "data"))
        digests = {r["digest"] for r in results}
        if len(digests) != 1:
            raise TrainingError(f"ranks ended with different weights {digests}; training diverged")
        results = sorted(results, key=lambda r: r["rank"])
        chief = results[0]
        first_batch = min((r["first_batch_time"] for r in results if r["first_batch_time"]),
                          default=time.time())
        summary = {
            "run": run_url, "num_proc": num_proc, "n_features": n_features,
            "n_classes": n_classes, "best_epoch": chief["best_epoch"],
            "launch_seconds": first_batch - fit_started,
            "fit_seconds": time.time() - fit_started,
            "devices": [r["device"] for r in results],
            "allreduce": sorted({r["allreduce"] for r in results}),
            "shard_rows": [r["shard_rows"] for r in results],
            "rank_digests": [r["digest"] for r in results],
            "attempts": attempts, "resumed_after_epoch": chief["resumed_after"] or None,
        }
        with open(os.path.join(run_dir, "history.json"), "w") as f:
            json.dump({"history": chief["history"], **summary}, f, indent=1)
        with open(os.path.join(run_dir, FINISHED), "w"):
            pass
        if temp_store:  # nobody asked to keep the run folder
            shutil.rmtree(temp_store, ignore_errors=True)
            summary["run"] = None
        model = HorovodKerasModel(model_bytes=chief["model"], history=chief["history"],
                                  summary=summary)
        self._copyValues(model)
        return model

    def _run_folder(self, store_dir: str) -> tuple[str, bool]:
        """The run folder of this fit: the latest unfinished run when resuming, else a new one."""
        unfinished = unfinished_runs(store_dir)
        if self.getResume():
            if not self.getStorePath():
                raise InputError("resume needs storePath (--store): the store of the run to "
                                 "continue.")
            if not unfinished:
                raise InputError(f"resume: {store_dir}/runs has no unfinished run with a "
                                 "checkpoint to continue; start without resume.")
            return unfinished[-1], True
        if unfinished:
            log.warning("%s holds %d unfinished run(s), the latest %s; it is kept, and this fit "
                        "starts a new run (pass resume=True / --resume to continue it instead)",
                        store_dir, len(unfinished), os.path.basename(unfinished[-1]))
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return os.path.join(store_dir, "runs", run_id), False

    def _run_with_retries(self, sc, config: dict, num_proc: int) -> tuple[list[dict], int]:
        """Run the ranks; after a failure, run again from the last committed epoch."""
        import horovod.spark

        from .worker import RANKS_DIR, load_checkpoint, train_rank

        attempts = self.getMaxRetries() + 1
        for attempt in range(1, attempts + 1):
            shutil.rmtree(os.path.join(config["run_dir"], RANKS_DIR), ignore_errors=True)
            watchdog = RunWatchdog(sc, config["run_dir"], num_proc,
                                   self.getStartTimeout())
            try:
                with ProgressWatcher(config["run_dir"], enabled=self.getVerbose() > 0), watchdog:
                    results = horovod.spark.run(
                        train_rank, args=(config,), num_proc=num_proc,
                        start_timeout=self.getStartTimeout(), use_gloo=True,
                        stdout=sys.stdout if self.getVerbose() else None,
                        stderr=sys.stderr if self.getVerbose() else None,
                        verbose=0, prefix_output_with_timestamp=False,
                    )
                return results, attempt
            except Exception as err:
                detail = rank_errors(config["run_dir"], clear=True)
                if watchdog.reason:
                    detail = (detail + "\n" if detail else "") + watchdog.reason
                cause = (detail or str(err)).strip().splitlines()[-1][:300]
                if attempt < attempts:
                    saved = load_checkpoint(config["run_dir"])
                    where = (f"epoch {len(saved['history'])} checkpoint" if saved
                             else "the start (no epoch was committed)")
                    log.warning("Horovod run failed (attempt %d of %d: %s); retrying from %s",
                                attempt, attempts, cause, where)
                    config = {**config, "resume": True}
                    continue
                raise TrainingError(
                    f"Horovod training failed after {attempt} attempt(s): {err}"
                    + (f"\n{detail}" if detail else "")
                    + f"\nCheckpoints are kept in {config['run_dir']}; with a storePath, "
                    "resume=True (--resume) continues from the last one."
                ) from err
        raise AssertionError("unreachable")


class TrainingError(RuntimeError):
    """Horovod training failed on every attempt; the message carries the ranks' errors."""


class RunWatchdog:
    """End a Horovod run that would otherwise hang, by cancelling its Spark job group.

    Two cases: ranks that started but did not all join the ring within ``start_timeout``
    seconds (one rank stuck before ``hvd.init``), and a rank that failed while the others
    stay blocked for more than ``grace`` seconds. ``reason`` says which, for the error.
    """

    def __init__(self, sc, run_dir: str, num_proc: int, start_timeout: float,
                 grace: float = 30.0, interval: float = 1.0):
        import threading

        self.sc, self.run_dir, self.num_proc = sc, run_dir, num_proc
        self.start_timeout, self.grace, self.interval = start_timeout, grace, interval
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hvd-otto-watchdog")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _states(self, suffix: str) -> list[str]:
        from .worker import RANKS_DIR

        folder = os.path.join(self.run_dir, RANKS_DIR)
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return sorted(n.split(".")[0].split("-")[1] for n in names if n.endswith(suffix))

    def check(self, now: float, first_alive: float | None, first_error: float | None) -> str | None:
        """The reason to cancel the run now, or ``None``, from the ranks' marker files."""
        joined = self._states(".joined")
        if first_alive is not None and len(joined) < self.num_proc \
                and now - first_alive > self.start_timeout:
            missing = sorted(set(map(str, range(self.num_proc))) - set(joined))
            return (f"rank(s) {', '.join(missing)} did not join the Horovod ring within "
                    f"startTimeout={self.start_timeout:g} s (joined: {joined or 'none'}); a "
                    "rank is stuck before hvd.init or its executor is unreachable")
        if first_error is not None and now - first_error > self.grace:
            return (f"a rank failed and the others were still blocked {self.grace:g} s later; "
                    "the run was cancelled")
        return None

    def _loop(self) -> None:
        from horovod.spark.driver import job_id

        first_alive = first_error = None
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if first_alive is None and self._states(".alive"):
                first_alive = now
            if first_error is None and os.path.isdir(os.path.join(self.run_dir, "errors")):
                first_error = now
            reason = self.check(now, first_alive, first_error)
            if reason:
                self.reason = reason
                log.warning("cancelling the Horovod run: %s", reason)
                self.sc.cancelJobGroup(f"horovod.spark.run.{job_id.JOB_ID}")
                return


class ProgressWatcher:
    """Print rank 0's epochs on the driver as they land in the run's ``history.json``.

    Works wherever the ranks' stdout goes (executor logs on a cluster), since the run folder
    is shared storage.
    """

    def __init__(self, run_dir: str, enabled: bool = True, interval: float = 1.0):
        import threading

        self.path = os.path.join(run_dir, "history.json")
        self.enabled, self.interval = enabled, interval
        self.shown = len(self._read().get("history", []))  # a resumed run's epochs were shown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hvd-otto-progress")

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.poll()
        return False

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def poll(self) -> None:
        from .worker import format_epoch

        state = self._read()
        if not state:
            return
        for entry in state["history"][self.shown:]:
            print(format_epoch(entry, state["epochs"]), flush=True)
        self.shown = max(self.shown, len(state["history"]))


def rank_errors(run_dir: str, clear: bool = False) -> str:
    """The tracebacks the ranks wrote into ``errors/`` (removed with ``clear``)."""
    folder = os.path.join(run_dir, "errors")
    if not os.path.isdir(folder):
        return ""
    parts = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            parts.append(f"--- {name[:-4]} ---\n" + f.read().strip())
    if clear:
        shutil.rmtree(folder, ignore_errors=True)
    return "\n".join(parts)


#: Test-only fault hook: ``HVD_OTTO_TEST_FAULT=rank=R,epoch=E[,batch=B]`` makes rank R exit
#: abruptly in epoch E, once per run, to prove retries resume from the checkpoint. Off unless set.
FAULT_ENV = "HVD_OTTO_TEST_FAULT"
FINISHED = "_FINISHED"
_RUN_IDENTITY = ("n_features", "n_classes", "optimizer", "batch_size", "model_digest",
                 "num_proc")


def _fault_hook(parse) -> dict | None:
    try:
        return parse(os.environ.get(FAULT_ENV))
    except ValueError as err:
        raise InputError(f"{FAULT_ENV}: {err}") from None


def check_writable(folder: str) -> None:
    """Fail at once, naming the folder, when the store cannot be written."""
    try:
        os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
        probe = os.path.join(folder, "runs", f".probe-{uuid.uuid4().hex[:8]}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise InputError(f"storePath {folder} is not writable ({err.strerror or err}); choose "
                         "a folder the driver and every executor can write.") from None


def unfinished_runs(store_dir: str) -> list[str]:
    """Run folders with at least one committed epoch and no ``_FINISHED`` marker, oldest first."""
    from .worker import HISTORY_FILE

    runs = os.path.join(store_dir, "runs")
    if not os.path.isdir(runs):
        return []
    return [os.path.join(runs, name) for name in sorted(os.listdir(runs))
            if os.path.exists(os.path.join(runs, name, HISTORY_FILE))
            and not os.path.exists(os.path.join(runs, name, FINISHED))]


def check_run_matches(run_dir: str, config: dict, num_proc: int) -> None:
    """Record what a run trains; a resumed run must train the same model on the same data."""
    import hashlib

    spec = json.dumps(config["model"], sort_keys=True, default=lambda b: b.hex())
    identity = {"n_features": config["n_features"], "n_classes": config["n_classes"],
                "optimizer": config["optimizer"], "batch_size": config["batch_size"],
                "model_digest": hashlib.sha256(spec.encode()).hexdigest()[:16],
                "num_proc": num_proc}
    path = os.path.join(run_dir, "run.json")
    if config["resume"] and os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = [f"{k}: {before.get(k)} → {identity[k]}" for k in _RUN_IDENTITY
                   if before.get(k) != identity[k]]
        if changed:
            raise InputError(f"cannot resume {run_dir}: it trains something else now "
                             f"({'; '.join(changed)}); start a new run without resume.")
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(identity, f, indent=1)


def task_slots(sc) -> int:
    """Concurrent Spark task slots now: cores (and GPUs, when tasks ask for one) / per task."""
    conf = sc.getConf()
    task_cpus = int(conf.get("spark.task.cpus", "1"))
    match = re.match(r"local\[(\d+|\*)(?:,\d+)?\]$", sc.master)
    if sc.master == "local":
        cores = 1
    elif match:
        cores = os.cpu_count() if match.group(1) == "*" else int(match.group(1))
    else:
        cores = sc.defaultParallelism
    slots = cores // task_cpus
    task_gpus = float(conf.get("spark.task.resource.gpu.amount", "0"))
    executor_gpus = float(conf.get("spark.executor.resource.gpu.amount", "0"))
    if task_gpus > 0 and executor_gpus > 0 and not sc.master.startswith("local"):
        executors = max(0, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)
        slots = min(slots, executors * int(executor_gpus // task_gpus))
    return slots


def check_task_slots(sc, num_proc: int, timeout: float) -> None:
    """horovod.spark.run needs ``num_proc`` tasks at once; fail clearly instead of waiting."""
    slots = task_slots(sc)
    # Only a cluster gains slots while executors register; local mode has what it has.
    deadline = time.monotonic() + (0 if sc.master.startswith("local") else min(timeout, 30))
    while slots < num_proc and time.monotonic() < deadline:
        time.sleep(1)  # executors of a cluster may still be registering
        slots = task_slots(sc)
    if slots < num_proc:
        raise InputError(
            f"numProc={num_proc} needs {num_proc} concurrent Spark task slots, but the cluster "
            f"has {slots} (master {sc.master}, spark.task.cpus="
            f"{sc.getConf().get('spark.task.cpus', '1')}); lower numProc or add executors/cores."
        )


# --- the fitted model ----------------------------------------------------------------------------


class HorovodKerasModel(Model, _HorovodKerasParams, MLReadable, MLWritable):
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

    def setFeaturesCol(self, v): return self._set(featuresCol=v)
    def setPredictionCol(self, v): return self._set(predictionCol=v)
    def setProbabilityCol(self, v): return self._set(probabilityCol=v)
    def setPredictBatchSize(self, v): return self._set(predictBatchSize=v)

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
        from .model import model_from_bytes

        return model_from_bytes(self._model_bytes)

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector, predict_batch_udf
        from pyspark.sql import functions as F
        from pyspark.sql.types import ArrayType, FloatType

        from .ingest import float_array

        if self.getFeaturesCol() not in dataset.columns:
            raise InputError(f"transform(): no column '{self.getFeaturesCol()}' in the DataFrame"
                             f" (columns: {dataset.columns}).")
        n_features = self._summary.get("n_features")
        broadcast = dataset.sparkSession.sparkContext.broadcast(self._model_bytes)
        predict = predict_batch_udf(
            _predict_fn_factory(broadcast), return_type=ArrayType(FloatType()),
            batch_size=self.getPredictBatchSize(),
            input_tensor_shapes=[[n_features]] if n_features else None,
        ).asNondeterministic()  # evaluated once, not once per use below
        tmp = f"_proba_{uuid.uuid4().hex[:8]}"
        scored = dataset.withColumn(tmp, predict(float_array(dataset, self.getFeaturesCol())))
        return scored.withColumn(
            self.getProbabilityCol(), array_to_vector(F.col(tmp))
        ).withColumn(
            self.getPredictionCol(),
            F.expr(f"CAST(array_position(`{tmp}`, array_max(`{tmp}`)) - 1 AS DOUBLE)"),
        ).drop(tmp)

    # --- persistence ---------------------------------------------------------------------------

    def write(self) -> MLWriter:
        return _HorovodKerasModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _HorovodKerasModelReader(cls)


def _predict_fn_factory(broadcast):
    """``make_predict_fn`` for predict_batch_udf: load once per Python worker, pin a device."""

    def make_predict_fn():
        from .devices import pin_device, spark_task_gpus
        from .model import model_from_bytes
        from .worker import quiet_worker_warnings

        quiet_worker_warnings()
        from pyspark import TaskContext

        context = TaskContext.get()
        try:
            pin_device(spark_task_gpus(), 0, "auto",
                       cpu_threads=context.cpus() if context else None)
        except RuntimeError:
            pass  # TensorFlow already initialised in this worker: keep its settings
        model = model_from_bytes(broadcast.value)

        def predict(features):
            return model(features, training=False).numpy()

        return predict

    return make_predict_fn


_MODEL_FILE = "model.keras"


class _HorovodKerasModelWriter(MLWriter):
    def __init__(self, instance: HorovodKerasModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sc,
            extraMetadata={"history": self.instance._history, "summary": self.instance._summary,
                           "format": "hvd-otto-keras/1"},
        )
        fs = store.HadoopFs(self.sparkSession)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, _MODEL_FILE)
            with open(local, "wb") as f:
                f.write(self.instance._model_bytes)
            fs.copy_from_local(local, store.join(store.to_url(path), _MODEL_FILE))


class _HorovodKerasModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> HorovodKerasModel:
        fs = store.HadoopFs(self.sparkSession)
        url = store.to_url(path)
        if not fs.exists(store.join(url, "metadata")) or not fs.exists(store.join(url, _MODEL_FILE)):
            raise InputError(f"{path}: not a saved HorovodKerasModel (no metadata/ or "
                             f"{_MODEL_FILE}); pass the folder written by model.save().")
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if metadata.get("format") != "hvd-otto-keras/1":
            raise InputError(f"{path}: saved by something else ({metadata.get('class')}).")
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, _MODEL_FILE)
            fs.copy_to_local(store.join(url, _MODEL_FILE), local)
            with open(local, "rb") as f:
                data = f.read()
        check_keras_bytes(data, f"{path}/{_MODEL_FILE}")
        model = HorovodKerasModel(data, metadata.get("history"), metadata.get("summary"))
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def check_keras_bytes(data: bytes, where: str) -> None:
    """Load the model once on the driver (Keras safe_mode), so a damaged or unsafe file is a
    clear error here rather than a crash inside every scoring task."""
    from .model import model_from_bytes

    try:
        model_from_bytes(data)
    except Exception as err:  # noqa: BLE001 - any load failure is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise InputError(f"{where} is not a loadable Keras model ({first}); it was damaged "
                         "or changed after saving (unsafe content such as Lambda layers is "
                         "refused).") from None
