"""Inference of a plain Keras MLP with numpy alone, for scoring on CPU workers.

A ``.keras`` file is a zip of ``config.json`` and ``model.weights.h5``. When the model is a
``Sequential`` of float32 ``Dense``, ``Dropout``, ``Activation`` and ``BatchNormalization``
layers (the seed's MLP and its options), its forward pass is a few matrix products: a scoring
worker then needs no TensorFlow import (2-3 s per Python worker here, and its memory). Any other
model returns ``None`` from :func:`numpy_forward` and is scored by TensorFlow.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 0.5 * (1 + np.tanh(0.5 * x)),  # no overflow for large |x|
    "tanh": np.tanh,
    "softmax": _softmax,
}
_PASS_THROUGH = ("InputLayer", "Dropout")  # Dropout is the identity at inference


class Unsupported(Exception):
    """The model has something this module does not compute exactly as Keras does."""


def _is_float32(config: dict) -> bool:
    dtype = config.get("dtype", "float32")
    if isinstance(dtype, dict):  # a mixed-precision Policy
        dtype = dtype.get("config", {}).get("name")
    return dtype == "float32"


def _activation(name) -> Callable[[np.ndarray], np.ndarray]:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise Unsupported(f"activation {name!r}")
    return ACTIVATIONS[name]


def _layer_step(layer: dict, weights: list[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """One layer of the config as a numpy function of its input batch."""
    kind, config = layer.get("class_name"), layer.get("config", {})
    if layer.get("module", "keras.layers") != "keras.layers" or layer.get("registered_name"):
        raise Unsupported(f"custom layer {kind}")
    if not _is_float32(config):
        raise Unsupported(f"{kind} with dtype {config.get('dtype')}")
    if kind == "InputLayer":
        shape = config.get("batch_input_shape")
        if (shape is not None and len(shape) != 2) or config.get("sparse") \
                or config.get("ragged"):
            raise Unsupported(f"input {shape} (sparse={config.get('sparse')}, "
                              f"ragged={config.get('ragged')}): only dense rows of features")
    if kind in _PASS_THROUGH:
        return lambda x: x
    if kind == "Activation":
        return _activation(config.get("activation"))
    if kind == "Dense":
        act = _activation(config.get("activation", "linear"))
        expected = 2 if config.get("use_bias", True) else 1
        if len(weights) != expected or weights[0].ndim != 2:
            raise Unsupported(f"Dense {config.get('name')} has {len(weights)} variables")
        kernel = weights[0]
        bias = weights[1] if expected == 2 else None
        if bias is not None and bias.shape != (kernel.shape[1],):
            raise Unsupported(f"Dense {config.get('name')}: bias shape {bias.shape}")

        relu = config.get("activation") == "relu"

        def dense(x: np.ndarray) -> np.ndarray:
            y = x @ kernel
            if bias is not None:
                y += bias
            if relu:  # in place: y is this layer's own fresh array
                return np.maximum(y, 0, out=y)
            return act(y)

        return dense
    if kind == "BatchNormalization":
        axis = config.get("axis", -1)
        if axis not in (-1, 1, [1], [-1]):
            raise Unsupported(f"BatchNormalization over axis {axis}")
        if config.get("renorm") or config.get("virtual_batch_size") or config.get("synchronized"):
            raise Unsupported("BatchNormalization with renorm, virtual batches or sync")
        center, scale = config.get("center", True), config.get("scale", True)
        if len(weights) != 2 + center + scale:
            raise Unsupported(f"BatchNormalization {config.get('name')}: {len(weights)} vars")
        gamma = weights[0] if scale else 1.0
        beta = weights[int(scale)] if center else 0.0
        mean, var = weights[-2], weights[-1]
        # What tf.nn.batch_normalization computes: x * inv + (beta - mean * inv)
        inv = (1.0 / np.sqrt(var + np.float32(config.get("epsilon", 1e-3)))) * gamma
        inv = inv.astype(np.float32)
        shift = (beta - mean * inv).astype(np.float32)
        return lambda x: x * inv + shift
    raise Unsupported(f"layer {kind}")


def _variables(weights_file, path: str) -> list[np.ndarray]:
    group = weights_file.get(f"{path}/vars")
    if group is None:
        return []
    return [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]


def _weight_paths(layers: list[dict]) -> list[str | None]:
    """Where Keras' saving_lib put each layer's variables: ``layers/<snake_case class>`` with
    ``_1``, ``_2``… for later layers of the same class, in order (layer names are not used);
    a Sequential's InputLayer is not among its layers."""
    used: dict[str, int] = {}
    paths = []
    for layer in layers:
        kind = layer.get("class_name", "")
        if kind == "InputLayer":
            paths.append(None)
            continue
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
        used[name] = used.get(name, -1) + 1
        paths.append(f"layers/{name}" + (f"_{used[name]}" if used[name] else ""))
    return paths


def _check_widths(layers: list[dict], variables: list[list[np.ndarray]]) -> None:
    """The variables must chain: each Dense's kernel takes the width the layer before gave."""
    width = None
    for layer, found in zip(layers, variables):
        kind, config = layer.get("class_name"), layer.get("config", {})
        if kind == "InputLayer":
            shape = config.get("batch_input_shape") or [None]
            width = shape[-1]
        elif kind == "Dense":
            if width is not None and found and found[0].shape[0] != width:
                raise Unsupported(f"Dense kernel {found[0].shape} after width {width}")
            width = config.get("units")
        elif kind == "BatchNormalization" and width is not None:
            if any(v.shape != (width,) for v in found):
                raise Unsupported(f"BatchNormalization variables do not have width {width}")


def numpy_forward(model_bytes: bytes) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model's inference as a numpy function of a float32 batch, or ``None`` when the model
    is not a float32 ``Sequential`` of the layers above (then use TensorFlow)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            config = json.loads(archive.read("config.json"))
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        log.debug("numpy inference: not a .keras archive (%s)", err)
        return None
    if config.get("class_name") != "Sequential" or config.get("module") not in (None, "keras"):
        log.debug("numpy inference: a %s model, not a Sequential", config.get("class_name"))
        return None
    import h5py

    try:
        layers = config["config"]["layers"]
        with h5py.File(io.BytesIO(weights_bytes), "r") as weights:
            variables = [_variables(weights, path) if path else []
                         for path in _weight_paths(layers)]
        _check_widths(layers, variables)
        steps = [_layer_step(layer, found) for layer, found in zip(layers, variables)]
    except (Unsupported, KeyError, TypeError, OSError) as err:
        log.debug("numpy inference: unsupported model (%s)", err)
        return None

    def forward(x: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(x, dtype=np.float32)
        for step in steps:
            y = step(y)
        return y

    return forward
