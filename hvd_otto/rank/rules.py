"""Per-epoch decisions of a rank, as plain arithmetic: best epoch, early stop, LR decay.

Kept free of TensorFlow so the rules are unit-tested directly; ``TrainingState`` applies
them to the model. Every rank sees the same rank-averaged metrics, so every rank decides
the same.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MIN_DELTA_STOP = 1e-3  # an epoch must improve the monitored loss by this to reset patience
MIN_DELTA_DECAY = 1e-4  # Keras ReduceLROnPlateau's default
DECAY_FACTOR = 0.5


@dataclass
class EpochVerdict:
    improved: bool  # a new best value: keep these weights
    stop: bool  # early stopping ends training after this epoch
    lr: float  # the learning rate for the next epoch (decayed or unchanged)


@dataclass
class EpochRules:
    """Counters of early stopping (``patience``) and LR decay (``decay_patience``); 0 = off.

    The field names are the ``counters`` of ``history.json``, so a resumed run continues
    with the same counts.
    """

    patience: int
    decay_patience: int
    lr: float
    best: float = math.inf
    best_epoch: int | None = None
    stop_best: float = math.inf
    stop_wait: int = 0
    stopped: bool = False
    decay_best: float = math.inf
    decay_wait: int = 0

    COUNTERS = ("best", "best_epoch", "stop_best", "stop_wait", "stopped", "decay_best",
                "decay_wait", "lr")

    def update(self, epoch: int, value: float, lr: float) -> EpochVerdict:
        """Apply epoch ``epoch``'s (1-based) monitored ``value``; ``lr`` is the optimizer's now."""
        value = math.inf if value is None or math.isnan(value) else value
        improved = value < self.best
        if improved:
            self.best, self.best_epoch = value, epoch
        if value < self.stop_best - MIN_DELTA_STOP:
            self.stop_best, self.stop_wait = value, 0
        else:
            self.stop_wait += 1
            if self.patience > 0 and self.stop_wait >= self.patience:
                self.stopped = True
        self.lr = lr
        if value < self.decay_best - MIN_DELTA_DECAY:
            self.decay_best, self.decay_wait = value, 0
        elif self.decay_patience > 0:
            self.decay_wait += 1
            if self.decay_wait >= self.decay_patience:
                self.lr *= DECAY_FACTOR
                self.decay_wait = 0
        return EpochVerdict(improved, self.stopped, self.lr)

    def counters(self) -> dict:
        """JSON-safe counters (infinity as ``null``)."""
        values = asdict(self)
        return {k: (None if isinstance(values[k], float) and math.isinf(values[k]) else values[k])
                for k in self.COUNTERS}

    def restore(self, counters: dict) -> None:
        """Continue from :meth:`counters` as committed in ``history.json``."""
        for key, value in counters.items():
            if key in self.COUNTERS:
                setattr(self, key, math.inf if value is None and key.endswith("best") else value)
