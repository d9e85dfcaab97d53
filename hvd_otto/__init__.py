"""hvd-otto: Horovod-on-Spark training of Keras models as Spark ML, shown on the Otto data.

The public API, importable from the package root::

    from hvd_otto import HorovodKerasEstimator, HorovodKerasModel, load_csv, prepare
    from hvd_otto import InputError, TrainingError, get_spark, build_preprocessing

Names are imported on first use, so a Horovod rank that imports one sub-module does not pay
for the rest. The package layout is described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "HorovodKerasEstimator": "hvd_otto.driver.estimator",
    "HorovodKerasModel": "hvd_otto.driver.model",
    "load_csv": "hvd_otto.data.csv_source",
    "prepare": "hvd_otto.data.prepare",
    "build_preprocessing": "hvd_otto.data.features",
    "CountTransformer": "hvd_otto.data.features",
    "InputError": "hvd_otto.common.errors",
    "TrainingError": "hvd_otto.common.errors",
    "get_spark": "hvd_otto.app.session",
    "build_pipeline": "hvd_otto.app.pipeline",
    "run_pipeline": "hvd_otto.app.pipeline",
    "load_model": "hvd_otto.app.scoring",
    "evaluate": "hvd_otto.app.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hvd_otto' has no attribute {name!r}")


def _register_saved_class_paths() -> None:
    """Models saved by hvd-otto 0.1 before the package split record their stages' classes as
    ``hvd_otto.estimator.*`` and ``hvd_otto.features.*``; Spark imports those names when it
    loads them, so they stay importable (and nothing else lives there)."""
    legacy = {
        "hvd_otto.estimator": ("HorovodKerasEstimator", "HorovodKerasModel"),
        "hvd_otto.features": ("CountTransformer",),
    }
    for module_name, names in legacy.items():
        if module_name in sys.modules:
            continue
        module = types.ModuleType(module_name, "Saved-model class paths of hvd-otto 0.1.")

        def lookup(attr, names=names):
            if attr in names:
                return __getattr__(attr)
            raise AttributeError(attr)

        module.__getattr__ = lookup
        sys.modules[module_name] = module


_register_saved_class_paths()
