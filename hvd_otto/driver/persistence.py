"""ML persistence of the Estimator and the Model: Spark's params metadata plus ``.keras``.

No pickles: Keras objects (optimizer, loss, metrics) are saved as their Keras configs, custom
objects as import paths (``module:qualname``), models as ``.keras`` files loaded with Keras
``safe_mode`` and load-checked on the driver. Callbacks are not saved (a warning says so).
"""

from __future__ import annotations

import logging
import os
import tempfile

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from ..common import fs as store
from ..common.errors import InputError
from ..common.keras_objects import (
    import_paths,
    keyed_custom_objects,
    loss_spec,
    metrics_spec,
    optimizer_spec,
    resolve_import_paths,
)

log = logging.getLogger(__name__)

_MODEL_FILE = "model.keras"
_ESTIMATOR_FORMAT = "hvd-otto-estimator/1"
#: Params saved outside Spark's JSON param map (Python objects).
_OBJECT_PARAMS = ("model", "callbacks", "customObjects")
_SPECS = {"optimizer": optimizer_spec, "loss": loss_spec, "metrics": metrics_spec}


def _json_params(instance) -> dict:
    """The instance's set params as Spark saves them, Keras objects as their configs."""
    params = {}
    for param, value in instance._paramMap.items():
        if param.name in _OBJECT_PARAMS:
            continue
        params[param.name] = _SPECS[param.name](value) if param.name in _SPECS else value
    return params


def _write_bytes(fs, data: bytes, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(url))
        with open(local, "wb") as f:
            f.write(data)
        fs.copy_from_local(local, url)


def _read_bytes(fs, url: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(url))
        fs.copy_to_local(url, local)
        with open(local, "rb") as f:
            return f.read()


def _custom_objects(metadata: dict, path: str) -> dict | None:
    paths = metadata.get("custom_objects")
    return resolve_import_paths(paths, path) if paths else None


class HorovodKerasEstimatorWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        estimator = self.instance
        callbacks = estimator.getCallbacks() or []
        if callbacks:
            log.warning("%s: the callbacks (%s) are Python objects and are not saved; set them "
                        "again with setCallbacks() after loading", path,
                        ", ".join(type(c).__name__ for c in callbacks))
        DefaultParamsWriter.saveMetadata(
            estimator, path, self.sc, paramMap=_json_params(estimator),
            extraMetadata={"format": _ESTIMATOR_FORMAT,
                           "custom_objects": import_paths(estimator.getCustomObjects()),
                           "has_model": estimator.getModel() is not None,
                           "callbacks_not_saved": [type(c).__name__ for c in callbacks]})
        if estimator.getModel() is not None:
            from ..common.keras_model import user_model_bytes

            data = user_model_bytes(estimator.getModel(),
                                    keyed_custom_objects(estimator.getCustomObjects()))
            _write_bytes(store.HadoopFs(self.sparkSession), data,
                         store.join(store.to_url(path), _MODEL_FILE))


class HorovodKerasEstimatorReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        import tensorflow as tf

        from ..common.keras_model import model_from_bytes

        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if metadata.get("format") != _ESTIMATOR_FORMAT:
            raise InputError(f"{path}: not a saved HorovodKerasEstimator "
                             f"({metadata.get('class')}).")
        estimator = self.cls()
        estimator._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(estimator, metadata)
        custom = _custom_objects(metadata, path)
        keyed = keyed_custom_objects(custom)
        deserialize = {"optimizer": tf.keras.optimizers.deserialize,
                       "loss": tf.keras.losses.deserialize}
        for name, fn in deserialize.items():
            value = estimator.getOrDefault(name)
            if isinstance(value, dict):
                estimator._set(**{name: fn(value, custom_objects=keyed)})
        metrics = estimator.getMetrics()
        estimator._set(metrics=[tf.keras.metrics.deserialize(m, custom_objects=keyed)
                                if isinstance(m, dict) else m for m in metrics])
        if custom:
            estimator.setCustomObjects(custom)
        if metadata.get("has_model"):
            url = store.join(store.to_url(path), _MODEL_FILE)
            data = _read_bytes(store.HadoopFs(self.sparkSession), url)
            check_keras_bytes(data, f"{path}/{_MODEL_FILE}", keyed)
            estimator.setModel(model_from_bytes(data, keyed))
        if metadata.get("callbacks_not_saved"):
            log.warning("%s: saved without its callbacks (%s); set them with setCallbacks()",
                        path, ", ".join(metadata["callbacks_not_saved"]))
        return estimator


class HorovodKerasModelWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sc, paramMap=_json_params(self.instance),
            extraMetadata={"history": self.instance._history, "summary": self.instance._summary,
                           "format": "hvd-otto-keras/1",
                           "custom_objects": import_paths(self.instance.getCustomObjects())},
        )
        _write_bytes(store.HadoopFs(self.sparkSession), self.instance._model_bytes,
                     store.join(store.to_url(path), _MODEL_FILE))


class HorovodKerasModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        fs = store.HadoopFs(self.sparkSession)
        url = store.to_url(path)
        if not fs.exists(store.join(url, "metadata")) or not fs.exists(store.join(url, _MODEL_FILE)):
            raise InputError(f"{path}: not a saved HorovodKerasModel (no metadata/ or "
                             f"{_MODEL_FILE}); pass the folder written by model.save().")
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if metadata.get("format") != "hvd-otto-keras/1":
            raise InputError(f"{path}: saved by something else ({metadata.get('class')}).")
        data = _read_bytes(fs, store.join(url, _MODEL_FILE))
        custom = _custom_objects(metadata, path)
        check_keras_bytes(data, f"{path}/{_MODEL_FILE}", keyed_custom_objects(custom))
        model = self.cls(data, metadata.get("history"), metadata.get("summary"))
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        if custom:
            model.setCustomObjects(custom)
        return model


def check_keras_bytes(data: bytes, where: str, custom_objects: dict | None = None) -> None:
    """Load the model once on the driver (Keras safe_mode), so a damaged or unsafe file is a
    clear error here rather than a crash inside every scoring task."""
    from ..common.keras_model import load_or_refuse

    load_or_refuse(data, custom_objects, f"{where} is not a loadable Keras model",
                   "It was damaged or changed after saving; unsafe content such as Lambda "
                   "layers is refused, and custom classes must be importable or registered.")
