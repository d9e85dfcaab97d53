"""Optimizer, loss, metrics and custom objects as Keras configs (no JVM, no Horovod run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from hvd_otto import InputError
from hvd_otto.common.keras_model import model_from_bytes, user_model_bytes
from hvd_otto.common.keras_objects import (
    import_paths,
    keyed_custom_objects,
    loss_spec,
    make_loss,
    make_metrics,
    make_optimizer,
    metrics_spec,
    optimizer_learning_rate,
    optimizer_spec,
    plain,
    resolve_import_paths,
)


def _through_json(spec):
    return json.loads(json.dumps(spec))  # what crosses to a rank or into saved metadata


def test_a_new_style_optimizer_becomes_its_legacy_twin_with_its_settings():
    spec = _through_json(optimizer_spec(tf.keras.optimizers.Adam(0.002, beta_1=0.8,
                                                                 clipnorm=1.0)))
    assert optimizer_learning_rate(spec, default_lr=0.5) == pytest.approx(0.002)
    built = make_optimizer(spec, learning_rate=0.004)  # scaled by 2 ranks
    assert isinstance(built, tf.keras.optimizers.legacy.Adam)
    config = built.get_config()
    assert config["learning_rate"] == pytest.approx(0.004)
    assert config["beta_1"] == pytest.approx(0.8) and config["clipnorm"] == 1.0


def test_a_legacy_optimizer_keeps_its_class_and_settings():
    spec = _through_json(optimizer_spec(tf.keras.optimizers.legacy.SGD(0.01, momentum=0.7,
                                                                       nesterov=True)))
    built = make_optimizer(spec, learning_rate=0.02)
    assert isinstance(built, tf.keras.optimizers.legacy.SGD)
    assert built.get_config()["momentum"] == pytest.approx(0.7) and built.nesterov


def test_names_use_the_learning_rate_param():
    assert optimizer_spec("sgd") == "sgd"
    assert optimizer_learning_rate("sgd", default_lr=0.3) == 0.3
    assert isinstance(make_optimizer("rmsprop", 0.1), tf.keras.optimizers.legacy.RMSprop)


@pytest.mark.parametrize("optimizer, message", [
    (lambda: tf.keras.optimizers.AdamW(0.001), "wraps the legacy Keras optimizers"),
    (lambda: tf.keras.optimizers.Adam(0.001, weight_decay=0.1), "weight_decay=0.1"),
    (lambda: tf.keras.optimizers.SGD(0.01, use_ema=True), "use_ema=True"),
])
def test_settings_the_legacy_twin_lacks_are_refused_not_dropped(optimizer, message):
    with pytest.raises(InputError, match=message):
        make_optimizer(_through_json(optimizer_spec(optimizer())), 0.001)


def test_a_schedule_and_a_wrong_type_are_clear_errors():
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(0.001, 100, 0.9)
    with pytest.raises(InputError, match="schedule is not supported"):
        optimizer_learning_rate(optimizer_spec(tf.keras.optimizers.Adam(schedule)), 0.001)
    with pytest.raises(InputError, match="optimizer must be one of"):
        optimizer_spec("lbfgs")
    with pytest.raises(InputError, match="a name or a tf.keras optimizer"):
        optimizer_spec(object())


def test_loss_and_metric_objects_round_trip_with_their_settings():
    loss = make_loss(_through_json(loss_spec(
        tf.keras.losses.SparseCategoricalCrossentropy(name="scce", ignore_class=3))))
    assert isinstance(loss, tf.keras.losses.SparseCategoricalCrossentropy)
    assert loss.name == "scce" and loss.get_config()["ignore_class"] == 3
    assert make_loss("sparse_categorical_crossentropy") == "sparse_categorical_crossentropy"
    specs = _through_json(metrics_spec(
        ["accuracy", tf.keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")]))
    name, top3 = make_metrics(specs)
    assert name == "accuracy" and top3.name == "top3" and top3.get_config()["k"] == 3


@pytest.mark.parametrize("value, call, message", [
    (tf.keras.losses.sparse_categorical_crossentropy, loss_spec, "tf.keras.losses.Loss"),
    ("accuracy", metrics_spec, "must be a list"),
    ([object()], metrics_spec, "is not a name or a tf.keras.metrics.Metric"),
])
def test_wrong_loss_and_metrics_are_clear_errors(value, call, message):
    with pytest.raises(InputError, match=message):
        call(value)


def test_registered_classes_are_keyed_by_their_registered_name_too():
    from keras_custom import ScaledDense

    keyed = keyed_custom_objects({"ScaledDense": ScaledDense})
    assert keyed["ScaledDense"] is ScaledDense
    assert keyed["hvd_otto_tests>ScaledDense"] is ScaledDense
    assert keyed_custom_objects(None) == {}


def test_custom_objects_are_saved_as_import_paths_and_resolved_back():
    from keras_custom import ScaledDense

    paths = import_paths({"ScaledDense": ScaledDense})
    assert paths == {"ScaledDense": "keras_custom:ScaledDense"}
    assert resolve_import_paths(paths, "saved/") == {"ScaledDense": ScaledDense}
    with pytest.raises(InputError, match="no_such_module.*--py-files"):
        resolve_import_paths({"X": "no_such_module:X"}, "saved/")

    class Local(tf.keras.layers.Layer):
        pass

    with pytest.raises(InputError, match="top level of an importable module"):
        import_paths({"Local": Local})


def test_a_custom_layer_model_loads_in_safe_mode_and_a_lambda_is_refused():
    from keras_custom import ScaledDense, functional_model

    model = functional_model(5, 3)
    keyed = keyed_custom_objects({"ScaledDense": ScaledDense})
    again = model_from_bytes(user_model_bytes(model, keyed), keyed)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-6)
    inputs = tf.keras.Input(shape=(5,))
    lam = tf.keras.Model(inputs, tf.keras.layers.Lambda(lambda t: t * 2)(inputs))
    with pytest.raises(InputError, match="Lambda layer is refused"):
        user_model_bytes(lam)
    with pytest.raises(InputError, match="must be a tf.keras.Model"):
        user_model_bytes("model.keras")


def test_plain_makes_numpy_values_json_safe():
    assert plain({"a": np.float32(0.5), "b": (1, 2)}) == {"a": 0.5, "b": [1, 2]}


def test_labels_are_short_and_readable():
    from hvd_otto.common.keras_objects import spec_label

    label = spec_label(optimizer_spec(tf.keras.optimizers.Adam(0.002)))
    assert label.startswith("Adam(") and "learning_rate=0.002," in label and "name=" not in label
    metric = spec_label(metrics_spec([tf.keras.metrics.SparseTopKCategoricalAccuracy(
        k=3, name="top3")])[0])
    assert "name=top3" in metric and "k=3" in metric
    assert spec_label("adam") == "adam"
