"""A user's own Keras code, as the bring-your-own-model tests use it: a registered custom
layer, a functional model built with it, and a callback that records what each rank saw."""

from __future__ import annotations

import json
import os

import tensorflow as tf


@tf.keras.saving.register_keras_serializable(package="hvd_otto_tests")
class ScaledDense(tf.keras.layers.Layer):
    """Dense with a fixed output scale: a custom layer with its own config."""

    def __init__(self, units: int, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight("bias", (self.units,), initializer="zeros")

    def call(self, inputs):
        return tf.matmul(inputs, self.kernel) * self.scale + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


def functional_model(n_features: int, n_classes: int) -> tf.keras.Model:
    """Two branches joined: a functional model, not a Sequential."""
    inputs = tf.keras.Input(shape=(n_features,), name="features")
    wide = ScaledDense(32, scale=0.5, name="scaled")(inputs)
    deep = tf.keras.layers.Dense(32, activation="relu")(inputs)
    joined = tf.keras.layers.Concatenate()([tf.keras.layers.ReLU()(wide), deep])
    joined = tf.keras.layers.Dropout(0.1)(joined)
    outputs = tf.keras.layers.Dense(n_classes, activation="softmax", dtype="float32")(joined)
    return tf.keras.Model(inputs, outputs, name="byo_functional")


class EpochRecorder(tf.keras.callbacks.Callback):
    """Writes ``rank<R>-epoch<E>.json`` (the epoch's logs) into ``folder`` on every rank."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        import horovod.tensorflow.keras as hvd

        path = os.path.join(self.folder, f"rank{hvd.rank()}-epoch{epoch + 1}.json")
        with open(path, "w") as f:
            json.dump({k: float(v) for k, v in (logs or {}).items()}, f)
