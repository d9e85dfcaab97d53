"""Rank-side pieces that need TensorFlow but no Horovod run: the default model, the fault hook."""

import os

import pytest

from hvd_otto.common.defaults import default
from hvd_otto.common.rank_config import FaultSpec
from hvd_otto.common.run_folder import RunFolder

tf = pytest.importorskip("tensorflow")


def test_the_mlp_builder_defaults_are_the_estimators():
    """The benchmarks' 'same model' baseline calls build_mlp with no arguments."""
    from hvd_otto import HorovodKerasEstimator
    from hvd_otto.common.keras_model import build_mlp, model_from_spec

    model = build_mlp(5, 3)
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, tf.keras.layers.Dropout)]
    dense = [layer.units for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
    est = HorovodKerasEstimator()
    assert dropouts == [est.getDropout()] * len(est.getHiddenLayers())
    assert dense == [*est.getHiddenLayers(), 3]
    spec = HorovodKerasEstimator(hiddenLayers=[4], dropout=0.2)._model_spec()
    small = model_from_spec(spec, 5, 3)
    assert [layer.rate for layer in small.layers if hasattr(layer, "rate")] == [0.2]
    assert default("dropout") == est.getDropout()


class Exited(Exception):
    pass


def test_fault_injection_exits_once_at_the_named_batch(tmp_path, monkeypatch):
    from hvd_otto.rank.callbacks import FaultInjection

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    run = RunFolder(str(tmp_path))
    hook = FaultInjection(FaultSpec(rank=1, epoch=2, batch=3), rank=1, run=run)
    hook.on_epoch_begin(0)
    for batch in range(5):
        hook.on_train_batch_end(batch)  # epoch 1: nothing
    hook.on_epoch_begin(1)
    hook.on_train_batch_end(1)
    with pytest.raises(Exited):
        hook.on_train_batch_end(2)
    assert os.path.exists(run.fault_marker(1, 2))
    hook.on_train_batch_end(2)  # the retried run passes the same batch: once per run folder
    other = FaultInjection(FaultSpec(rank=1, epoch=2, batch=3), rank=0, run=run)
    other.on_epoch_begin(1)
    other.on_train_batch_end(2)  # another rank is never hit


def test_the_training_state_callback_has_no_fault_hook():
    from hvd_otto.rank.callbacks import TrainingState

    assert not any("fault" in name for name in vars(TrainingState))


def test_epoch_seeds_differ_by_epoch_and_rank_and_never_change():
    from hvd_otto.rank.shards import epoch_seed

    seeds = {epoch_seed(42, e, r) for e in range(1, 50) for r in range(8)}
    assert len(seeds) == 49 * 8 and all(0 <= s < 2**31 for s in seeds)
    assert epoch_seed(42, 3, 1) == epoch_seed(42, 3, 1) == (42 * 1_000_003 + 3 * 7_919 + 1)


def test_a_run_resumed_from_its_checkpoint_trains_exactly_like_an_uninterrupted_one(tmp_path):
    """Weights + optimizer state in the checkpoint, data order and dropout masks from
    (seed, epoch, rank): epochs 3-4 after a restart equal epochs 3-4 of a straight run."""
    import numpy as np

    from hvd_otto.rank.callbacks import (
        EpochRandomness,
        load_optimizer_state,
        save_optimizer_state,
    )
    from hvd_otto.rank.shards import epoch_seed

    tf.keras.backend.experimental.enable_tf_random_generator()
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 6), dtype=np.float32), rng.integers(0, 3, 96)

    def model():
        tf.keras.utils.set_random_seed(5)
        m = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(16, "relu"),
                                 tf.keras.layers.Dropout(0.4), tf.keras.layers.Dense(3, "softmax")])
        m.compile(tf.keras.optimizers.legacy.Adam(0.01), "sparse_categorical_crossentropy")
        return m

    def stream(first_epoch):
        base = tf.data.Dataset.from_tensor_slices((x, y))
        epochs = tf.data.Dataset.range(first_epoch + 1, 5)
        return epochs.flat_map(lambda e: base.shuffle(96, seed=epoch_seed(7, e, 0),
                                                      reshuffle_each_iteration=False)).batch(16)

    def fit(m, first, last):
        m.fit(stream(first), steps_per_epoch=6, epochs=last, initial_epoch=first, verbose=0,
              callbacks=[EpochRandomness(7, 0)])

    straight = model()
    fit(straight, 0, 4)
    first_half = model()
    fit(first_half, 0, 2)
    first_half.save_weights(str(tmp_path / "w.weights.h5"))
    save_optimizer_state(first_half, str(tmp_path / "opt.npz"))
    resumed = model()
    resumed.load_weights(str(tmp_path / "w.weights.h5"))
    load_optimizer_state(resumed, str(tmp_path / "opt.npz"))
    fit(resumed, 2, 4)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_rank_without_gloo_says_where_and_how_to_rebuild():
    """The driver leaves the Gloo check to the ranks (driver.horovod_run): each checks its own."""
    from hvd_otto.rank.entry import require_gloo

    require_gloo(True, "/opt/venv/lib/horovod/__init__.py")
    with pytest.raises(RuntimeError, match=r"Horovod at /opt/venv/lib/horovod on .* built "
                                           r"without Gloo.*HOROVOD_WITH_GLOO=1"):
        require_gloo(False, "/opt/venv/lib/horovod/__init__.py")


def test_the_ranks_datasets_run_without_tf_data_autotuning():
    """With autotuning on, the iterator's destructor held model.fit 18-40 s after the last
    epoch."""
    from hvd_otto.rank.shards import without_autotune

    dataset = without_autotune(tf.data.Dataset.range(5).batch(2).prefetch(4))
    assert dataset.options().autotune.enabled is False
    assert [b.tolist() for b in dataset.as_numpy_iterator()] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("groups, expected", [(1, 1), (3, 3), (0, None)])
def test_allreduce_groups_reach_horovods_optimizer(monkeypatch, groups, expected):
    """0 is Horovod's per-gradient default (``groups=None``; Horovod rejects ``groups=0``)."""
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from hvd_otto.rank.entry import distributed_optimizer_options
    from tests.helpers import make_config

    seen = {}
    real = hvd_tf._make_allreduce_grads_fn

    def recording(name, device_dense, device_sparse, compression, sparse_as_dense, op,
                  gradient_predivide_factor, groups, **kwargs):
        seen["groups"] = groups
        return real(name, device_dense, device_sparse, compression, sparse_as_dense, op,
                    gradient_predivide_factor, groups, **kwargs)

    monkeypatch.setattr(hvd_tf, "_make_allreduce_grads_fn", recording)
    options = distributed_optimizer_options(make_config(allreduce_groups=groups))
    hvd.DistributedOptimizer(tf.keras.optimizers.legacy.Adam(0.001), **options)
    assert seen == {"groups": expected}
