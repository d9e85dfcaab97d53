"""ML persistence of ``HorovodKerasModel``: Spark's params metadata plus a ``.keras`` file.

No pickles: the model loads with Keras ``safe_mode``, and is load-checked on the driver.
"""

from __future__ import annotations

import os
import tempfile

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from ..common import fs as store
from ..common.errors import InputError

_MODEL_FILE = "model.keras"


class HorovodKerasModelWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sc,
            extraMetadata={"history": self.instance._history, "summary": self.instance._summary,
                           "format": "hvd-otto-keras/1"},
        )
        fs = store.HadoopFs(self.sparkSession)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, _MODEL_FILE)
            with open(local, "wb") as f:
                f.write(self.instance._model_bytes)
            fs.copy_from_local(local, store.join(store.to_url(path), _MODEL_FILE))


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
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, _MODEL_FILE)
            fs.copy_to_local(store.join(url, _MODEL_FILE), local)
            with open(local, "rb") as f:
                data = f.read()
        check_keras_bytes(data, f"{path}/{_MODEL_FILE}")
        model = self.cls(data, metadata.get("history"), metadata.get("summary"))
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def check_keras_bytes(data: bytes, where: str) -> None:
    """Load the model once on the driver (Keras safe_mode), so a damaged or unsafe file is a
    clear error here rather than a crash inside every scoring task."""
    from ..common.keras_model import model_from_bytes

    try:
        model_from_bytes(data)
    except Exception as err:  # noqa: BLE001 - any load failure is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise InputError(f"{where} is not a loadable Keras model ({first}); it was damaged "
                         "or changed after saving (unsafe content such as Lambda layers is "
                         "refused).") from None
