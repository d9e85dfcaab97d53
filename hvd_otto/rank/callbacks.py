"""Keras callbacks a rank trains with: the resumable training state, and the test fault hook."""

from __future__ import annotations

import hashlib
import os
import time

from ..common.rank_config import FaultSpec
from ..common.run_folder import RunFolder
from .rules import EpochRules


def _keras_callback_base():
    import tensorflow as tf

    return tf.keras.callbacks.Callback


def weights_digest(model) -> str:
    """A short hash of a model's weights (ranks must end with identical weights)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()[:16]


def save_optimizer_state(model, path: str) -> None:
    """The optimizer's variables (step count, moment estimates) as one ``.npz`` file."""
    import numpy as np

    weights = model.optimizer.get_weights()
    np.savez(path, **{f"v{i:04d}": w for i, w in enumerate(weights)})


def load_optimizer_state(model, path: str) -> None:
    """Restore what :func:`save_optimizer_state` wrote into a compiled model's optimizer."""
    import numpy as np

    with np.load(path) as saved:
        weights = [saved[name] for name in sorted(saved.files)]
    model.optimizer._create_all_weights(model.trainable_variables)  # legacy optimizers
    model.optimizer.set_weights(weights)


class TrainingState(_keras_callback_base()):
    """History, best weights, early stopping and learning-rate decay, resumable after a crash.

    Rank 0 commits every epoch into the run folder: the weights file first, then
    ``history.json`` (written with one rename) naming it, so the history never points at a
    half-written checkpoint and a restarted run continues after the last committed epoch.
    The decisions are :class:`~hvd_otto.rank.rules.EpochRules`.
    """

    def __init__(self, rank: int, samples_per_epoch: int, run: RunFolder, epochs: int,
                 monitor: str, rules: EpochRules):
        super().__init__()
        self.rank, self.samples, self.run = rank, samples_per_epoch, run
        self.epochs, self.monitor, self.rules = epochs, monitor, rules
        self.history: list[dict] = []
        self.best_weights = None
        self.first_batch_time = None
        self._started = None

    @property
    def completed(self) -> int:
        return len(self.history)

    @property
    def stopped(self) -> bool:
        return self.rules.stopped

    def restore(self, saved: dict, model) -> None:
        """Continue from a committed state: history, counters, learning rate and weights."""
        import tensorflow as tf

        self.history = list(saved["history"])
        self.rules.restore(saved["counters"])
        model.load_weights(self.run.checkpoint(saved["last_weights"]))
        if saved.get("last_optimizer"):  # moment estimates and step count continue
            load_optimizer_state(model, self.run.checkpoint(saved["last_optimizer"]))
        tf.keras.backend.set_value(model.optimizer.lr, self.rules.lr)
        if saved.get("best_weights"):
            current = model.get_weights()
            model.load_weights(self.run.checkpoint(saved["best_weights"]))
            self.best_weights = model.get_weights()
            model.set_weights(current)

    def _commit(self, improved: bool) -> None:
        os.makedirs(self.run.checkpoints_dir, exist_ok=True)
        last = f"epoch-{self.completed:04d}.weights.h5"
        self.model.save_weights(self.run.checkpoint(last))
        optimizer = f"epoch-{self.completed:04d}.optimizer.npz"
        save_optimizer_state(self.model, self.run.checkpoint(optimizer))
        best_epoch = self.rules.best_epoch
        best = f"best-epoch-{best_epoch:04d}.weights.h5" if best_epoch is not None else None
        if improved:
            self.model.save_weights(self.run.checkpoint(best))
        self.run.commit_history({  # the commit point of this epoch
            "history": self.history, "best_epoch": best_epoch, "epochs": self.epochs,
            "last_weights": last, "last_optimizer": optimizer, "best_weights": best,
            "counters": self.rules.counters()})
        for name in os.listdir(self.run.checkpoints_dir):
            if name not in (last, optimizer, best):
                os.remove(self.run.checkpoint(name))

    def on_train_batch_begin(self, batch, logs=None):
        if self.first_batch_time is None:
            self.first_batch_time = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        seconds = time.perf_counter() - self._started
        entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                 "seconds": seconds, "samples_per_second": self.samples / seconds}
        entry.pop("lr", None)
        lr_now = float(tf.keras.backend.get_value(self.model.optimizer.lr))
        verdict = self.rules.update(epoch + 1, entry.get(self.monitor), lr_now)
        if verdict.improved:
            self.best_weights = self.model.get_weights()
        entry["best"] = verdict.improved
        self.history.append(entry)
        if verdict.stop:
            self.model.stop_training = True
        if verdict.lr != lr_now:
            tf.keras.backend.set_value(self.model.optimizer.lr, verdict.lr)
        if self.rank == 0:
            self._commit(verdict.improved)


class EpochRandomness(_keras_callback_base()):
    """Reseed every random layer (Dropout, GaussianNoise, …) at the start of each epoch from
    (seed, epoch, rank), so a resumed run draws the masks an uninterrupted run draws.

    Needs Keras' ``tf.random.Generator`` RNG (``enable_tf_random_generator()`` before the model
    is built): its per-layer state can be reset, where the legacy ops' state cannot.
    """

    def __init__(self, seed: int, rank: int):
        super().__init__()
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, epoch, logs=None):
        from .shards import epoch_seed

        base = epoch_seed(self.seed, epoch + 1, self.rank)
        for i, generator in enumerate(random_generators(self.model)):
            generator.reset_from_seed(base * 1_009 + i)  # no two (epoch, layer) pairs share one


def random_generators(model) -> list:
    """The ``tf.random.Generator`` of every random layer of ``model`` (nested ones included)."""
    generators = []
    for layer in model.submodules:
        rng = getattr(layer, "_random_generator", None)
        if rng is None or not hasattr(rng, "_maybe_init"):
            continue
        rng._maybe_init()
        if getattr(rng, "_generator", None) is not None:
            generators.append(rng._generator)
    return generators


class FaultInjection(_keras_callback_base()):
    """Test-only: rank ``fault.rank`` exits abruptly after batch ``fault.batch`` of epoch
    ``fault.epoch``, once per run folder. Added to the callbacks only when the hook is set."""

    def __init__(self, fault: FaultSpec, rank: int, run: RunFolder):
        super().__init__()
        self.fault, self.rank, self.run = fault, rank, run
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        fault = self.fault
        if fault.rank != self.rank or fault.epoch != self._epoch or fault.batch != batch + 1:
            return
        marker = self.run.fault_marker(fault.rank, fault.epoch)
        if os.path.exists(marker):
            return
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as f:
            f.write(f"injected at batch {batch + 1}\n")
        print(f"rank {self.rank}: test fault hook: exiting in epoch {fault.epoch}", flush=True)
        os._exit(17)


def never_join_if_asked(fault: FaultSpec | None, env_rank: str) -> None:
    """Test-only: with ``epoch=0`` the hook's rank hangs before ``hvd.init`` (never joins)."""
    if fault and fault.epoch == 0 and env_rank == str(fault.rank):
        print(f"rank {env_rank}: test fault hook: never joining the ring", flush=True)
        time.sleep(3600)
