"""numpy inference of plain Keras MLPs: equal to Keras' own predictions, or refused."""

import numpy as np
import pytest

from hvd_otto.common.keras_model import build_mlp, model_to_bytes
from hvd_otto.common.numpy_forward import numpy_forward

tf = pytest.importorskip("tensorflow")


def _randomised(model, seed=0):
    """Every weight random (BatchNorm's moving variance positive), so nothing is trivially 0/1."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        value = rng.normal(scale=0.2, size=w.shape).astype(np.float32)
        if "moving_variance" in w.name:
            value = np.abs(value) + 0.5
        weights.append(value)
    model.set_weights(weights)
    return model


def _check_equal(model, n_features, atol=1e-5):
    forward = numpy_forward(model_to_bytes(model))
    assert forward is not None
    x = np.random.default_rng(1).normal(size=(300, n_features)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    got = forward(x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.allclose(got, expected, atol=atol)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_the_default_mlp_matches_keras():
    _check_equal(_randomised(build_mlp(93, 9)), 93)


def test_batch_norm_input_dropout_and_other_widths_match_keras():
    _check_equal(_randomised(build_mlp(20, 4, hidden=[64, 32], dropout=0.3, batch_norm=True,
                                       input_dropout=0.1), seed=3), 20)


def test_named_layers_activations_and_no_bias_match_keras():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(7,)),
        tf.keras.layers.Dense(16, activation="tanh", name="first"),
        tf.keras.layers.Dense(16, activation="sigmoid", use_bias=False, name="second"),
        tf.keras.layers.BatchNormalization(center=False, name="norm"),
        tf.keras.layers.Activation("relu"),
        tf.keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    _check_equal(_randomised(model, seed=5), 7)


def _functional():
    inputs = tf.keras.Input(shape=(5,))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(inputs))


def _other_activation():
    return tf.keras.Sequential([tf.keras.Input(shape=(5,)),
                                tf.keras.layers.Dense(3, activation="gelu")])


def _mixed_precision():
    layer = tf.keras.layers.Dense(4, activation="relu", dtype="mixed_float16")
    return tf.keras.Sequential([tf.keras.Input(shape=(5,)), layer,
                                tf.keras.layers.Dense(3, activation="softmax", dtype="float32")])


def _other_layer():
    return tf.keras.Sequential([tf.keras.Input(shape=(5,)), tf.keras.layers.LayerNormalization(),
                                tf.keras.layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("make", [_functional, _other_activation, _mixed_precision, _other_layer],
                         ids=["functional", "gelu", "mixed_float16", "LayerNormalization"])
def test_anything_else_is_left_to_tensorflow(make):
    assert numpy_forward(model_to_bytes(make())) is None


def test_bytes_that_are_no_keras_file_are_left_to_tensorflow():
    assert numpy_forward(b"not a zip") is None


def test_batch_norm_without_scale_and_large_sigmoid_inputs_match_keras():
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(6,)),
        tf.keras.layers.Dense(8, activation="sigmoid"),
        tf.keras.layers.BatchNormalization(scale=False),
        tf.keras.layers.Dense(3, activation="softmax"),
    ])
    _randomised(model, seed=7)
    kernel, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel * 500, bias])  # pre-activations far beyond ±100
    _check_equal(model, 6)


class Doubling(tf.keras.layers.Layer):
    def call(self, x):
        return 2 * x


def _nested():
    inner = tf.keras.Sequential([tf.keras.Input(shape=(5,)), tf.keras.layers.Dense(4)])
    return tf.keras.Sequential([tf.keras.Input(shape=(5,)), inner,
                                tf.keras.layers.Dense(3, activation="softmax")])


def _three_d_input():
    return tf.keras.Sequential([tf.keras.Input(shape=(2, 5)),
                                tf.keras.layers.Dense(3, activation="softmax")])


def _custom_layer():
    return tf.keras.Sequential([tf.keras.Input(shape=(5,)), Doubling(),
                                tf.keras.layers.Dense(3, activation="softmax")])


@pytest.mark.parametrize("make", [_nested, _three_d_input, _custom_layer],
                         ids=["nested Sequential", "3-D input", "custom layer"])
def test_structures_numpy_does_not_compute_are_left_to_tensorflow(make):
    assert numpy_forward(model_to_bytes(make())) is None
