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


RANKS_DIR = "ranks"


def mark_rank(run_dir: str, rank, state: str) -> None:
    """Leave ``ranks/rank-N.<state>`` in the run folder for the driver's watchdog."""
    folder = os.path.join(run_dir, RANKS_DIR)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank-{rank}.{state}"), "w"):
        pass


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

    fault = config.get("fault")
    env_rank = os.environ.get("HOROVOD_RANK", "-1")
    if fault and fault["epoch"] == 0 and env_rank == str(fault["rank"]):
        print(f"rank {env_rank}: test fault hook: never joining the ring", flush=True)
        time.sleep(3600)
    # The driver's watchdog ends a run whose ranks do not all join within startTimeout.
    mark_rank(config["run_dir"], env_rank, "alive")
    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    mark_rank(config["run_dir"], rank, "joined")
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
    state = TrainingState(rank, train["steps"] * batch * size, config, monitor, lr)
    saved = load_checkpoint(config["run_dir"]) if config.get("resume") else None
    resumed_after = len(saved["history"]) if saved else None
    if saved:
        state.restore(saved, model, config["run_dir"])
        if rank == 0:
            print(f"rank 0: resuming after epoch {state.completed} from the run's checkpoint",
                  flush=True)
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    if config["warmup_epochs"] > state.completed:
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=config["warmup_epochs"], momentum_correction=False,
            steps_per_epoch=train["steps"], verbose=0))
    callbacks.append(state)
    with train["reader"], (val["reader"] if val else contextlib.nullcontext()):
        if not state.stopped and state.completed < config["epochs"]:
            model.fit(train["dataset"], steps_per_epoch=train["steps"], epochs=config["epochs"],
                      initial_epoch=state.completed,
                      validation_data=val["dataset"] if val else None,
                      validation_steps=val["steps"] if val else None,
                      callbacks=callbacks, verbose=0)
    if state.best_weights is not None:  # None only when the loss was never finite
        model.set_weights(state.best_weights)
    _average_non_trainable(model)
    result = {"rank": rank, "digest": weights_digest(model), "device": str(choice),
              "allreduce": backend, "first_batch_time": state.first_batch_time,
              "shard_rows": train["rows"], "resumed_after": resumed_after}
    if rank == 0:
        result.update(model=model_to_bytes(model), history=state.history,
                      best_epoch=state.best_epoch)
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


HISTORY_FILE = "history.json"
CHECKPOINTS = "checkpoints"
MIN_DELTA_STOP = 1e-3  # an epoch must improve the monitored loss by this to reset patience
MIN_DELTA_DECAY = 1e-4  # Keras ReduceLROnPlateau's default
DECAY_FACTOR = 0.5


def load_checkpoint(run_dir: str) -> dict | None:
    """The last committed epoch state of a run folder (``None`` when nothing was committed)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    weights = saved.get("last_weights")
    if not saved.get("history") or not weights:
        return None
    if not os.path.exists(os.path.join(run_dir, CHECKPOINTS, weights)):
        raise RuntimeError(f"{path} names checkpoint {weights}, which is missing; the run "
                           "folder was changed by hand: start a new run.")
    return saved


def parse_fault(spec: str | None) -> dict | None:
    """Parse the test-only fault hook ``rank=R,epoch=E[,batch=B]`` (``None`` when unset).

    Rank R exits abruptly (``os._exit``) after batch B (default 1) of epoch E (1-based), once
    per run folder; ``epoch=0`` makes rank R never join the ring (a rank that does not start).
    It exists so the tests can prove that failures are retried from the last checkpoint and
    that hangs end; never set it in production.
    """
    if not spec:
        return None
    try:
        fields = dict(part.split("=", 1) for part in spec.split(","))
        fault = {"rank": int(fields.pop("rank")), "epoch": int(fields.pop("epoch")),
                 "batch": int(fields.pop("batch", 1))}
    except (KeyError, ValueError):
        fields = {"?": None}
    if fields:
        raise ValueError(f"fault hook '{spec}': expected rank=R,epoch=E[,batch=B]")
    return fault


class TrainingState(_keras_callback_base()):
    """History, best weights, early stopping and learning-rate decay, resumable after a crash.

    Rank 0 commits every epoch into the run folder: the weights file first, then
    ``history.json`` (written with one rename) naming it, so the history never points at a
    half-written checkpoint and a restarted run continues after the last committed epoch.
    Decisions use the rank-averaged metrics, so every rank decides the same.
    """

    def __init__(self, rank: int, samples_per_epoch: int, config: dict, monitor: str,
                 lr: float):
        super().__init__()
        self.rank, self.samples, self.monitor = rank, samples_per_epoch, monitor
        self.epochs, self.run_dir = config["epochs"], config["run_dir"]
        self.patience, self.decay_patience = config["patience"], config["lr_decay_patience"]
        self.fault = config.get("fault")
        self.history: list[dict] = []
        self.best, self.best_epoch, self.best_weights = math.inf, None, None
        self.stop_best, self.stop_wait, self.stopped = math.inf, 0, False
        self.decay_best, self.decay_wait, self.lr = math.inf, 0, lr
        self.first_batch_time = None
        self._started, self._epoch = None, 0

    @property
    def completed(self) -> int:
        return len(self.history)

    # --- persistence ---------------------------------------------------------------------------

    def _counters(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "best_epoch", "stop_best", "stop_wait",
                                              "stopped", "decay_best", "decay_wait", "lr")}

    def restore(self, saved: dict, model, run_dir: str) -> None:
        """Continue from a committed state: history, counters, learning rate and weights."""
        import tensorflow as tf

        self.history = list(saved["history"])
        for key, value in saved["counters"].items():
            setattr(self, key, math.inf if value is None and key.endswith("best") else value)
        checkpoints = os.path.join(run_dir, CHECKPOINTS)
        model.load_weights(os.path.join(checkpoints, saved["last_weights"]))
        tf.keras.backend.set_value(model.optimizer.lr, self.lr)
        if saved.get("best_weights"):
            current = model.get_weights()
            model.load_weights(os.path.join(checkpoints, saved["best_weights"]))
            self.best_weights = model.get_weights()
            model.set_weights(current)

    def _commit(self, improved: bool) -> None:
        checkpoints = os.path.join(self.run_dir, CHECKPOINTS)
        os.makedirs(checkpoints, exist_ok=True)
        last = f"epoch-{self.completed:04d}.weights.h5"
        self.model.save_weights(os.path.join(checkpoints, last))
        path = os.path.join(self.run_dir, HISTORY_FILE)
        best = (f"best-epoch-{self.best_epoch:04d}.weights.h5"
                if self.best_epoch is not None else None)
        if improved:
            self.model.save_weights(os.path.join(checkpoints, best))
        counters = {k: (None if isinstance(v, float) and math.isinf(v) else v)
                    for k, v in self._counters().items()}
        with open(path + ".tmp", "w") as f:
            json.dump({"history": self.history, "best_epoch": self.best_epoch,
                       "epochs": self.epochs, "last_weights": last, "best_weights": best,
                       "counters": counters}, f, indent=1)
        os.replace(path + ".tmp", path)  # the commit point of this epoch
        for name in os.listdir(checkpoints):
            if name not in (last, best):
                os.remove(os.path.join(checkpoints, name))

    # --- Keras hooks ---------------------------------------------------------------------------

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_batch_time is None:
            self.first_batch_time = time.time()

    def on_train_batch_end(self, batch, logs=None):
        fault = self.fault
        if (fault and fault["rank"] == self.rank and fault["epoch"] == self._epoch + 1
                and fault["batch"] == batch + 1):
            marker = os.path.join(self.run_dir, "faults",
                                  f"rank{fault['rank']}-epoch{fault['epoch']}")
            if not os.path.exists(marker):
                os.makedirs(os.path.dirname(marker), exist_ok=True)
                with open(marker, "w") as f:
                    f.write(f"injected at batch {batch + 1}\n")
                print(f"rank {self.rank}: test fault hook: exiting in epoch {fault['epoch']}",
                      flush=True)
                os._exit(17)

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._epoch = time.perf_counter(), epoch

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        seconds = time.perf_counter() - self._started
        entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                 "seconds": seconds, "samples_per_second": self.samples / seconds}
        entry.pop("lr", None)
        value = entry.get(self.monitor, math.inf)
        improved = value < self.best
        if improved:
            self.best, self.best_epoch = value, epoch + 1
            self.best_weights = self.model.get_weights()
        entry["best"] = improved
        self.history.append(entry)
        if value < self.stop_best - MIN_DELTA_STOP:
            self.stop_best, self.stop_wait = value, 0
        else:
            self.stop_wait += 1
            if self.patience > 0 and self.stop_wait >= self.patience:
                self.stopped = self.model.stop_training = True
        self.lr = float(tf.keras.backend.get_value(self.model.optimizer.lr))
        if value < self.decay_best - MIN_DELTA_DECAY:
            self.decay_best, self.decay_wait = value, 0
        elif self.decay_patience > 0:
            self.decay_wait += 1
            if self.decay_wait >= self.decay_patience:
                self.lr *= DECAY_FACTOR
                tf.keras.backend.set_value(self.model.optimizer.lr, self.lr)
                self.decay_wait = 0
        if self.rank == 0:
            self._commit(improved)
