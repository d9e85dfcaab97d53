"""What each Horovod rank runs: pin a device, read its Petastorm shard, train, report.

:func:`train_rank` is the function handed to ``horovod.spark.run``. Its argument is a plain
dict (see ``HorovodKerasEstimator._rank_config``), so nothing but data crosses to the ranks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import time
import traceback
import warnings

log = logging.getLogger(__name__)


def quiet_worker_warnings() -> None:
    """Silence Petastorm/pyarrow deprecation noise and TF's C++ chatter in this process only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(petastorm|pyarrow)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*ParquetDataset.*")
    logging.getLogger("petastorm").setLevel(logging.ERROR)


def steps_for(shard_rows: list[int], batch_size: int) -> int:
    """Steps per epoch that every rank runs: enough for the largest shard to be seen whole.

    Smaller shards wrap around (their dataset repeats), so no rank waits for another
    (no hang) and no rank's tail is dropped.
    """
    if min(shard_rows) <= 0:
        raise RuntimeError(
            f"a Horovod rank got no rows (shard sizes {shard_rows}); write more Parquet row"
            " groups than ranks, or use fewer ranks."
        )
    return max(1, math.ceil(max(shard_rows) / batch_size))


#: Petastorm 0.13.1's thread pool on pyarrow 14 sometimes drops whole row groups without an
#: error (seen here: 2 of 24 row groups missing in about one read of three). The synchronous
#: 'dummy' pool has never lost a row; use it for every read.
READER_POOL = "dummy"


def read_shard(url: str, rank: int, size: int, columns=("features", "label")):
    """Read this rank's Petastorm shard of a Parquet folder into numpy arrays."""
    import numpy as np
    from petastorm import make_batch_reader

    parts: dict[str, list] = {c: [] for c in columns}
    # Petastorm prints "Cache cleanup complete." on close: keep it off the ranks' stdout.
    with contextlib.redirect_stdout(io.StringIO()), make_batch_reader(
            url, cur_shard=rank, shard_count=size, num_epochs=1, schema_fields=list(columns),
            reader_pool_type=READER_POOL, shuffle_row_groups=False) as reader:
        for batch in reader:
            for c in columns:
                parts[c].append(getattr(batch, c))
    return {c: (np.concatenate(v) if v else np.empty((0,))) for c, v in parts.items()}


def count_shard(url: str, rank: int, size: int) -> int:
    """Rows of this rank's shard, reading only the label column."""
    return len(read_shard(url, rank, size, columns=("label",))["label"])


def weights_digest(model) -> str:
    """A short hash of a model's weights (ranks must end with identical weights)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()[:16]


def train_rank(config: dict) -> dict:
    """Train on this rank; on failure write the traceback into the run's ``errors/`` folder."""
    quiet_worker_warnings()
    rank = int(os.environ.get("HOROVOD_RANK", "-1"))
    try:
        return _train(config)
    except BaseException:
        errors = os.path.join(config["run_dir"], "errors")
        os.makedirs(errors, exist_ok=True)
        with open(os.path.join(errors, f"rank-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise


def _train(config: dict) -> dict:
    import horovod.tensorflow.keras as hvd

    from .devices import allreduce_backend, pin_device
    from .model import make_optimizer, model_from_spec, model_to_bytes

    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    try:
        from horovod.spark.task import get_available_devices
        addresses = list(get_available_devices())
    except Exception:  # not inside a Spark task (e.g. plain horovodrun)
        addresses = []
    cpu_threads = max(1, (os.cpu_count() or 1) // max(1, hvd.local_size()))
    choice = pin_device(addresses, local_rank, config["use_gpu"], cpu_threads,
                        config["mixed_precision"])
    backend = allreduce_backend(hvd.nccl_built(), hvd.gloo_built(), choice.kind == "gpu")
    print(f"rank {rank}/{size} on {os.uname().nodename}: {choice}; allreduce via {backend}",
          flush=True)

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)  # no per-batch "callback is slow" chatter
    tf.keras.utils.set_random_seed(config["seed"] + rank)
    batch = config["batch_size"]
    train = _shard_dataset(config, config["train_url"], rank, size, batch, shuffle=True)
    val = (_shard_dataset(config, config["val_url"], rank, size, batch, shuffle=False)
           if config.get("val_url") else None)

    model = model_from_spec(config["model"], config["n_features"], config["n_classes"])
    lr = config["learning_rate"] * size
    optimizer = hvd.DistributedOptimizer(make_optimizer(config["optimizer"], lr))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    monitor = "val_loss" if val else "loss"
    progress = EpochProgress(rank, size, train["steps"] * batch * size, config["epochs"],
                             monitor, config["run_dir"] if rank == 0 else None)
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    if config["warmup_epochs"] > 0:
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=config["warmup_epochs"], momentum_correction=False,
            steps_per_epoch=train["steps"], verbose=0))
    if config.get("lr_decay_patience", 0) > 0:
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=config["lr_decay_patience"], verbose=0))
    callbacks.append(progress)
    if config["patience"] > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config["patience"], min_delta=1e-3))
    with train["reader"], (val["reader"] if val else contextlib.nullcontext()):
        model.fit(train["dataset"], steps_per_epoch=train["steps"], epochs=config["epochs"],
                  validation_data=val["dataset"] if val else None,
                  validation_steps=val["steps"] if val else None,
                  callbacks=callbacks, verbose=0)
    if progress.best_weights is not None:  # None only when the loss was never finite
        model.set_weights(progress.best_weights)
    _average_non_trainable(model)
    result = {"rank": rank, "digest": weights_digest(model), "device": str(choice),
              "allreduce": backend, "first_batch_time": progress.first_batch_time, "shard_rows": train["rows"]}
    if rank == 0:
        result.update(model=model_to_bytes(model), history=progress.history,
                      best_epoch=progress.best_epoch)
    return result


def format_epoch(entry: dict, epochs: int) -> str:
    """One progress line for an epoch of the history."""
    metrics = "  ".join(f"{k}={entry[k]:.4f}" for k in
                        ("loss", "accuracy", "val_loss", "val_accuracy") if k in entry)
    return (f"epoch {entry['epoch']}/{epochs}  {metrics}  {entry['seconds']:.1f}s  "
            f"{entry['samples_per_second']:,.0f} samples/s{'  *best' if entry.get('best') else ''}")


def _average_non_trainable(model) -> None:
    """Average per-rank state (BatchNorm moving statistics) so every rank ends identical."""
    import horovod.tensorflow as hvd_tf

    for i, variable in enumerate(model.non_trainable_weights):
        variable.assign(hvd_tf.allreduce(variable, op=hvd_tf.Average, name=f"non_trainable_{i}"))


def _shard_dataset(config, url, rank, size, batch, shuffle):
    """A repeating tf.data pipeline over this rank's shard, in memory when it fits."""
    import horovod.tensorflow as hvd_tf
    import numpy as np
    import tensorflow as tf

    rows = count_shard(url, rank, size)
    all_rows = hvd_tf.allgather_object(rows, name=f"rows-{url.rsplit('/', 1)[-1]}")
    steps = steps_for(all_rows, batch)
    in_memory = rows * config["n_features"] * 4 <= config["cache_limit_bytes"]
    if in_memory:
        data = read_shard(url, rank, size)
        x = data["features"].astype(np.float32, copy=False)
        y = data["label"].astype(np.int32, copy=False)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        reader = contextlib.nullcontext()
    else:
        from petastorm import make_batch_reader
        from petastorm.tf_utils import make_petastorm_dataset

        reader = make_batch_reader(url, cur_shard=rank, shard_count=size, num_epochs=None,
                                   schema_fields=["features", "label"],
                                   reader_pool_type=READER_POOL, shuffle_row_groups=shuffle, seed=config["seed"] + rank)
        ds = make_petastorm_dataset(reader).map(lambda b: (b.features, b.label)).unbatch()
    ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(min(rows, 20000), seed=config["seed"] + rank)
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    if rank == 0:
        mode = "in memory" if in_memory else "streamed"
        print(f"rank 0: {url.rsplit('/', 1)[-1]} shards {all_rows} rows, {steps} steps of "
              f"{batch} per rank, {mode}", flush=True)
    return {"dataset": ds, "steps": steps, "rows": rows, "reader": reader}


def _keras_callback_base():
    import tensorflow as tf

    return tf.keras.callbacks.Callback


class EpochProgress(_keras_callback_base()):
    """Per-epoch history and best weights; rank 0 also writes checkpoints and history.json."""

    def __init__(self, rank, size, samples_per_epoch, epochs, monitor, run_dir):
        super().__init__()
        self.rank, self.size, self.samples, self.epochs = rank, size, samples_per_epoch, epochs
        self.monitor, self.run_dir = monitor, run_dir
        self.history: list[dict] = []
        self.best, self.best_epoch, self.best_weights = math.inf, None, None
        self.first_batch_time = None
        self._started = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_batch_time is None:
            self.first_batch_time = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                 "seconds": seconds, "samples_per_second": self.samples / seconds}
        entry.pop("lr", None)
        self.history.append(entry)
        value = entry.get(self.monitor, math.inf)
        improved = value < self.best
        if improved:
            self.best, self.best_epoch = value, epoch + 1
            self.best_weights = self.model.get_weights()
        if self.rank != 0:
            return
        checkpoints = os.path.join(self.run_dir, "checkpoints")
        os.makedirs(checkpoints, exist_ok=True)
        self.model.save_weights(os.path.join(checkpoints, "last.weights.h5"))
        if improved:
            self.model.save_weights(os.path.join(checkpoints, "best.weights.h5"))
        entry["best"] = improved
        path = os.path.join(self.run_dir, "history.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"history": self.history, "best_epoch": self.best_epoch,
                       "epochs": self.epochs}, f, indent=1)
        os.replace(path + ".tmp", path)  # the driver's progress watcher never sees half a file
