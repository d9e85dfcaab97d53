"""What the driver sends each Horovod rank: a frozen dataclass of plain data, plus the user's
custom objects and callbacks, which travel the way Spark ships the training function."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import InputError

#: Test-only fault hook: ``HVD_OTTO_TEST_FAULT=rank=R,epoch=E[,batch=B]`` makes rank R exit
#: abruptly in epoch E, once per run, to prove retries resume from the checkpoint. Off unless set.
FAULT_ENV = "HVD_OTTO_TEST_FAULT"


@dataclass(frozen=True)
class FaultSpec:
    """Rank ``rank`` exits (``os._exit``) after batch ``batch`` of epoch ``epoch`` (1-based),
    once per run folder; ``epoch=0`` makes it never join the ring (a rank that does not start).
    It exists so the tests can prove that failures are retried from the last checkpoint and
    that hangs end; never set it in production."""

    rank: int
    epoch: int
    batch: int = 1

    @classmethod
    def parse(cls, spec: str | None) -> "FaultSpec | None":
        """Parse ``rank=R,epoch=E[,batch=B]`` (``None`` when unset); ValueError when malformed."""
        if not spec:
            return None
        try:
            fields = dict(part.split("=", 1) for part in spec.split(","))
            fault = cls(rank=int(fields.pop("rank")), epoch=int(fields.pop("epoch")),
                        batch=int(fields.pop("batch", 1)))
        except (KeyError, ValueError):
            fields = {"?": None}
        if fields:
            raise ValueError(f"fault hook '{spec}': expected rank=R,epoch=E[,batch=B]")
        return fault

    @classmethod
    def from_env(cls, environ=os.environ) -> "FaultSpec | None":
        """The hook as set in ``HVD_OTTO_TEST_FAULT``; a malformed value is an InputError."""
        try:
            return cls.parse(environ.get(FAULT_ENV))
        except ValueError as err:
            raise InputError(f"{FAULT_ENV}: {err}") from None


@dataclass(frozen=True)
class RankConfig:
    """Everything a rank needs to train; built by the driver (every field from the Estimator's
    Params, so defaults live only in ``defaults``), read by ``rank.entry``."""

    run_dir: str
    train_url: str
    val_url: str | None
    n_features: int
    n_classes: int
    model: dict = field(hash=False)  # {"kind": "mlp"|"json"|"keras", ...}: see keras_model
    optimizer: str | dict = field(hash=False)  # a name or a Keras config: see keras_objects
    loss: str | dict = field(hash=False)
    metrics: tuple = field(hash=False)
    learning_rate: float
    batch_size: int
    epochs: int
    patience: int
    warmup_epochs: int
    lr_decay_patience: int
    seed: int
    use_gpu: str
    mixed_precision: bool
    compression: str  # "none" | "fp16": see defaults.COMPRESSIONS
    backward_passes: int
    allreduce_groups: int  # 0 = Horovod's per-tensor allreduces: see defaults.TRAINING_PARAMS
    cache_limit_bytes: int
    cpu_threads: int  # the cores of the rank's Spark task: TensorFlow's thread budget
    resume: bool
    custom_objects: dict = field(hash=False)  # see keras_objects.keyed_custom_objects
    callbacks: tuple = field(hash=False)  # the user's Keras callbacks, run on every rank
    fault: FaultSpec | None = None
