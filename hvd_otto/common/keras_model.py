"""The Keras model: the seed's MLP builder, user models from JSON or ``.keras``, and bytes."""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

from .defaults import default


def build_mlp(n_features: int, n_classes: int, hidden: Sequence[int] | None = None,
              dropout: float | None = None, batch_norm: bool | None = None,
              input_dropout: float | None = None):
    """The seed's MLP: [input Dropout,] Dense(relu) [+ BatchNorm] + Dropout per hidden layer,
    softmax output. Unset arguments take the Estimator's defaults (``defaults``)."""
    import tensorflow as tf

    hidden = default("hiddenLayers") if hidden is None else hidden
    dropout = default("dropout") if dropout is None else dropout
    batch_norm = default("batchNorm") if batch_norm is None else batch_norm
    input_dropout = default("inputDropout") if input_dropout is None else input_dropout

    layers = [tf.keras.Input(shape=(n_features,), name="features")]
    if input_dropout:
        layers.append(tf.keras.layers.Dropout(input_dropout))
    for units in hidden:
        layers.append(tf.keras.layers.Dense(units, activation=None if batch_norm else "relu"))
        if batch_norm:
            layers += [tf.keras.layers.BatchNormalization(), tf.keras.layers.Activation("relu")]
        if dropout:
            layers.append(tf.keras.layers.Dropout(dropout))
    # float32 output even under mixed precision, for a stable softmax and loss.
    layers.append(tf.keras.layers.Dense(n_classes, activation="softmax", dtype="float32"))
    return tf.keras.Sequential(layers, name="otto_mlp")


def model_from_spec(spec: dict, n_features: int, n_classes: int,
                    custom_objects: dict | None = None):
    """Build the model a training run asks for: ``{"kind": "mlp"|"json"|"keras", ...}``."""
    import tensorflow as tf

    kind = spec.get("kind", "mlp")
    if kind == "mlp":
        return build_mlp(n_features, n_classes, spec.get("hidden"), spec.get("dropout"),
                         spec.get("batch_norm"), spec.get("input_dropout"))
    if kind == "json":
        model = tf.keras.models.model_from_json(spec["json"], custom_objects=custom_objects)
        if not isinstance(model, tf.keras.Model):
            raise ValueError(f"modelConfig does not describe a Keras model (it gave a "
                             f"{type(model).__name__}); pass model.to_json() of a Keras model")
        return model
    if kind == "keras":
        return model_from_bytes(spec["bytes"], custom_objects)
    raise ValueError(f"unknown model kind '{kind}'")


def model_to_bytes(model) -> bytes:
    """Serialise a Keras model to the bytes of a ``.keras`` file (no pickled Python)."""
    import tensorflow as tf

    if model.optimizer is not None:  # drop the (Horovod-wrapped) optimizer: weights only
        weights = model.get_weights()
        model = tf.keras.models.clone_model(model)
        model.set_weights(weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes, custom_objects: dict | None = None):
    """Load a ``.keras`` file's bytes with ``safe_mode`` (no arbitrary code), uncompiled;
    ``custom_objects`` resolves the model's custom layers (a Lambda layer is still refused)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return tf.keras.models.load_model(path, custom_objects=custom_objects, compile=False,
                                          safe_mode=True)


def user_model_bytes(model, custom_objects: dict | None = None) -> bytes:
    """A user's ``tf.keras.Model`` as ``.keras`` bytes, checked to load back in Keras safe_mode
    (what every rank and scoring worker does) so an unsafe model fails here, clearly."""
    import tensorflow as tf

    from .errors import InputError

    if not isinstance(model, tf.keras.Model):
        raise InputError(f"model must be a tf.keras.Model, got {type(model).__name__}.")
    data = model_to_bytes(model)
    load_or_refuse(data, custom_objects, "model: it does not load back with Keras safe_mode",
                   "A Lambda layer is refused: write a layer class instead; register custom "
                   "classes with @tf.keras.saving.register_keras_serializable() or pass them "
                   "in customObjects.")
    return data


def load_or_refuse(data: bytes, custom_objects: dict | None, what: str, advice: str):
    """:func:`model_from_bytes`, any failure an InputError: ``what (the error). advice``."""
    from .errors import InputError, error_summary

    try:
        return model_from_bytes(data, custom_objects)
    except Exception as err:  # noqa: BLE001 - any load failure is the same user error
        raise InputError(f"{what} ({error_summary(err)}). {advice}") from None
