"""What each Horovod rank runs: pin a device, read its Petastorm shard, train, report.

:func:`train_rank` is the function handed to ``horovod.spark.run``. Its argument is a frozen
:class:`~hvd_otto.common.rank_config.RankConfig`, so nothing but data crosses to the ranks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback

from ..common.quiet import quiet_worker_warnings
from ..common.rank_config import RankConfig
from ..common.run_folder import RunFolder

log = logging.getLogger(__name__)


def train_rank(config: RankConfig) -> dict:
    """Train on this rank; on failure write the traceback into the run's ``errors/`` folder."""
    quiet_worker_warnings()
    rank = int(os.environ.get("HOROVOD_RANK", "-1"))
    try:
        return _train(config, {"rank_started": time.time()})
    except BaseException:
        RunFolder(config.run_dir).write_error(rank, traceback.format_exc())
        raise


def _train(config: RankConfig, marks: dict[str, float]) -> dict:
    """``marks``: wall-clock times of this rank's phases (see ``training_run.fit_phases``)."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    marks["imported"] = time.time()
    run = RunFolder(config.run_dir)
    rank, size, choice, backend = _join_and_pin(config, run)
    marks["joined"] = time.time()
    train = _datasets(config, rank, size)
    val = train.pop("validation")
    marks["data_ready"] = time.time()
    model, lr = _compiled_model(config, size)
    state, resumed_after = _training_state(config, run, rank, size, model, train["steps"], lr,
                                           monitor="val_loss" if val else "loss")
    marks["compiled"] = time.time()
    from .callbacks import EpochRandomness

    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                 hvd.callbacks.MetricAverageCallback(), EpochRandomness(config.seed, rank)]
    if config.warmup_epochs > state.completed:
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=config.warmup_epochs, momentum_correction=False,
            steps_per_epoch=train["steps"], verbose=0))
    callbacks.append(state)
    if rank == 0:  # TensorBoard event files in the run folder: runs/<id>/logs/
        callbacks.append(tf.keras.callbacks.TensorBoard(run.logs_dir, write_graph=False,
                                                        profile_batch=0))
    callbacks.extend(config.callbacks)
    if config.fault:
        from .callbacks import FaultInjection

        callbacks.append(FaultInjection(config.fault, rank, run))
    with train["reader"], (val["reader"] if val else contextlib.nullcontext()):
        if not state.stopped and state.completed < config.epochs:
            model.fit(train["stream"](state.completed), steps_per_epoch=train["steps"],
                      epochs=config.epochs, initial_epoch=state.completed,
                      validation_data=val["stream"](0) if val else None,
                      validation_steps=val["steps"] if val else None,
                      callbacks=callbacks, verbose=0)
    marks["first_batch"] = state.first_batch_time or time.time()
    marks["trained"] = time.time()
    return _result(model, state, rank, choice, backend, train["rows"], resumed_after,
                   tf_threads(), marks)


def _join_and_pin(config: RankConfig, run: RunFolder):
    """Join the Horovod ring (markers for the watchdog), then pin this rank's device."""
    import horovod
    import horovod.tensorflow.keras as hvd

    from ..common.devices import allreduce_backend, pin_device
    from .callbacks import never_join_if_asked

    env_rank = os.environ.get("HOROVOD_RANK", "-1")
    never_join_if_asked(config.fault, env_rank)
    # The driver's watchdog ends a run whose ranks do not all join within startTimeout.
    run.mark_rank(env_rank, "alive")
    require_gloo(hvd.gloo_built(), horovod.__file__)
    hvd.init()
    rank, size, local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
    run.mark_rank(rank, "joined")
    try:
        from horovod.spark.task import get_available_devices
        addresses = list(get_available_devices())
    except Exception:  # not inside a Spark task (e.g. plain horovodrun)
        addresses = []
    # The task's cores, not the host's: ranks and other tasks share a node.
    choice = pin_device(addresses, local_rank, config.use_gpu, config.cpu_threads,
                        config.mixed_precision)
    backend = allreduce_backend(hvd.nccl_built(), hvd.gloo_built(), choice.kind == "gpu")
    threads = tf_threads()
    print(f"rank {rank}/{size} on {os.uname().nodename}: {choice}, {threads} CPU "
          f"thread(s); allreduce via {backend}", flush=True)
    return rank, size, choice, backend


def require_gloo(gloo_built: bool, where: str) -> None:
    """The ranks join a Gloo ring: fail clearly when this executor's Horovod lacks Gloo (the
    driver does not check its own Horovod; see ``driver.horovod_run``)."""
    if not gloo_built:
        raise RuntimeError(
            f"Horovod at {os.path.dirname(where)} on {os.uname().nodename} was built without "
            "Gloo, which hvd-otto's ranks use to join the ring: reinstall Horovod on the "
            "executors with HOROVOD_WITH_GLOO=1 (README: Installing on cluster nodes).")


def tf_threads() -> int:
    """TensorFlow's intra-op thread count as configured now (0: TensorFlow's own default)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads()


def _datasets(config: RankConfig, rank: int, size: int) -> dict:
    """The training shard's dataset dict, with ``validation`` (a dict or ``None``) inside."""
    import tensorflow as tf

    from .shards import shard_dataset

    tf.get_logger().setLevel(logging.ERROR)  # no per-batch "callback is slow" chatter
    tf.keras.utils.set_random_seed(config.seed + rank)
    train = shard_dataset(config, config.train_url, rank, size, shuffle=True)
    train["validation"] = (shard_dataset(config, config.val_url, rank, size, shuffle=False)
                           if config.val_url else None)
    return train


def _compiled_model(config: RankConfig, size: int):
    """The model, compiled with Horovod's DistributedOptimizer at the LR scaled by ``size``."""
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from ..common.keras_model import model_from_spec
    from ..common.keras_objects import make_loss, make_metrics, make_optimizer

    # Random layers draw from tf.random.Generator, whose state EpochRandomness can reset.
    tf.keras.backend.experimental.enable_tf_random_generator()
    custom = config.custom_objects
    model = model_from_spec(config.model, config.n_features, config.n_classes, custom)
    lr = config.learning_rate * size
    optimizer = hvd.DistributedOptimizer(make_optimizer(config.optimizer, lr, custom),
                                         **distributed_optimizer_options(config))
    model.compile(optimizer=optimizer, loss=make_loss(config.loss, custom),
                  metrics=make_metrics(list(config.metrics), custom))
    return model, lr


def distributed_optimizer_options(config: RankConfig) -> dict:
    """Keyword arguments of ``hvd.DistributedOptimizer`` for the rank's config.

    ``allreduce_groups`` 0 means Horovod's default (``groups=None``: one allreduce per
    gradient); Horovod itself rejects ``groups=0``.
    """
    import horovod.tensorflow.keras as hvd

    return {"compression": hvd.Compression.fp16 if config.compression == "fp16"
            else hvd.Compression.none,
            "backward_passes_per_step": config.backward_passes,
            "groups": config.allreduce_groups or None}


def _training_state(config: RankConfig, run: RunFolder, rank: int, size: int, model,
                    steps: int, lr: float, monitor: str):
    """The training-state callback, restored from the run's checkpoint when resuming."""
    from .callbacks import TrainingState
    from .rules import EpochRules

    rules = EpochRules(config.patience, config.lr_decay_patience, lr)
    state = TrainingState(rank, steps * config.batch_size * size, run, config.epochs, monitor,
                          rules)
    saved = run.load_checkpoint() if config.resume else None
    if saved:
        state.restore(saved, model)
        if rank == 0:
            print(f"rank 0: resuming after epoch {state.completed} from the run's checkpoint",
                  flush=True)
    return state, (len(saved["history"]) if saved else None)


def _result(model, state, rank: int, choice, backend: str, shard_rows: int,
            resumed_after: int | None, cpu_threads: int, marks: dict[str, float]) -> dict:
    """Best weights, per-rank facts for the driver, and (rank 0) the model's bytes."""
    from ..common.keras_model import model_to_bytes
    from .callbacks import weights_digest

    if state.best_weights is not None:  # None only when the loss was never finite
        model.set_weights(state.best_weights)
    _average_non_trainable(model)
    result = {"rank": rank, "digest": weights_digest(model), "device": str(choice),
              "cpu_threads": cpu_threads,
              "allreduce": backend, "first_batch_time": state.first_batch_time,
              "shard_rows": shard_rows, "resumed_after": resumed_after, "marks": marks}
    if rank == 0:
        result.update(model=model_to_bytes(model), history=state.history,
                      best_epoch=state.rules.best_epoch)
    return result


def _average_non_trainable(model) -> None:
    """Average per-rank state (BatchNorm moving statistics) so every rank ends identical."""
    import horovod.tensorflow as hvd_tf

    for i, variable in enumerate(model.non_trainable_weights):
        variable.assign(hvd_tf.allreduce(variable, op=hvd_tf.Average, name=f"non_trainable_{i}"))
