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
