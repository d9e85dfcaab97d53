"""Optimizer, loss and metrics as Keras configs: what the driver sends, what a rank builds.

A user's Keras objects never travel as pickles: the driver turns each into Keras' own
serialised form (``{"class_name", "config", ...}``), a JSON-safe dict that a rank (or a saved
Estimator) turns back into an object with the run's ``customObjects``. A name (``"adam"``,
``"accuracy"``) stays a name. No pyspark import: the ranks and the unit tests use this.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from .defaults import OPTIMIZERS
from .errors import InputError

#: Keras optimizers with a legacy twin (what Horovod 0.28's DistributedOptimizer wraps: it
#: subclasses the optimizer's class and overrides the legacy gradient hooks).
LEGACY_TWINS = ("Adadelta", "Adagrad", "Adam", "Adamax", "Ftrl", "Nadam", "RMSprop", "SGD")
#: New-style options that the legacy twin has no equivalent for, with their neutral values.
_NEW_ONLY = {"weight_decay": None, "use_ema": False, "ema_momentum": None,
             "ema_overwrite_frequency": None, "jit_compile": None, "is_legacy_optimizer": None}


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and tuples made JSON-safe (what Spark's metadata holds)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


# --- optimizer --------------------------------------------------------------------------------

def optimizer_spec(optimizer) -> str | dict:
    """What the ranks get for the ``optimizer`` param: a name, or the object's Keras config."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS} or a Keras optimizer "
                             f"object, got '{optimizer}'.")
        return optimizer
    if isinstance(optimizer, dict):  # already a Keras config (a loaded Estimator's)
        return optimizer
    import tensorflow as tf

    if not isinstance(optimizer, (tf.keras.optimizers.Optimizer,
                                  tf.keras.optimizers.legacy.Optimizer)):
        raise InputError(f"optimizer must be a name or a tf.keras optimizer, got "
                         f"{type(optimizer).__name__}.")
    return plain(tf.keras.optimizers.serialize(optimizer))


def optimizer_learning_rate(spec: str | dict, default_lr: float) -> float:
    """The one-rank learning rate: the object's own, or ``learningRate`` for a name."""
    if isinstance(spec, str):
        return default_lr
    lr = spec["config"].get("learning_rate", spec["config"].get("lr"))
    if not isinstance(lr, (int, float)):
        raise InputError(f"optimizer {spec['class_name']}: a learning-rate schedule is not "
                         "supported; give a number (the ranks scale it by numProc, warm it up "
                         "over warmupEpochs and halve it after lrDecayPatience).")
    return float(lr)


def make_optimizer(spec: str | dict, learning_rate: float, custom_objects: dict | None = None):
    """A legacy Keras optimizer at ``learning_rate`` from a name or a Keras config.

    A new-style built-in optimizer is rebuilt as its legacy twin with the same settings;
    settings the twin lacks (weight decay, EMA) are an error rather than silently dropped.
    """
    import tensorflow as tf

    if isinstance(spec, str):
        classes = {
            "adam": tf.keras.optimizers.legacy.Adam,
            "sgd": lambda learning_rate: tf.keras.optimizers.legacy.SGD(learning_rate,
                                                                         momentum=0.9),
            "adadelta": tf.keras.optimizers.legacy.Adadelta,
            "rmsprop": tf.keras.optimizers.legacy.RMSprop,
        }
        if spec not in classes:
            raise InputError(f"unknown optimizer '{spec}'; use one of {OPTIMIZERS}")
        return classes[spec](learning_rate=learning_rate)
    config = dict(spec["config"])
    name = spec["class_name"]
    if config.get("is_legacy_optimizer") is False:
        if name not in LEGACY_TWINS:
            raise InputError(f"optimizer {name}: Horovod 0.28 wraps the legacy Keras "
                             f"optimizers; use one of tf.keras.optimizers.{LEGACY_TWINS} or a "
                             "subclass of tf.keras.optimizers.legacy.Optimizer.")
        for key, neutral in _NEW_ONLY.items():
            value = config.pop(key, None)
            if key in ("weight_decay", "use_ema") and value not in (neutral, 0, 0.0):
                raise InputError(f"optimizer {name}: {key}={value} has no equivalent in the "
                                 f"legacy optimizer Horovod 0.28 wraps; leave it unset.")
        config = {k: v for k, v in config.items() if v is not None}
        optimizer = getattr(tf.keras.optimizers.legacy, name).from_config(config)
    else:
        optimizer = tf.keras.optimizers.deserialize(spec, custom_objects=custom_objects,
                                                    use_legacy_optimizer=True)
    optimizer.learning_rate = learning_rate
    return optimizer


# --- loss and metrics -------------------------------------------------------------------------

def loss_spec(loss) -> str | dict:
    """A loss name or Keras ``Loss`` object as the ranks get it."""
    if isinstance(loss, (str, dict)):
        return loss
    import tensorflow as tf

    if not isinstance(loss, tf.keras.losses.Loss):
        raise InputError(f"loss must be a name or a tf.keras.losses.Loss object, got "
                         f"{type(loss).__name__} (wrap a function in a Loss subclass).")
    return plain(tf.keras.losses.serialize(loss))


def make_loss(spec: str | dict, custom_objects: dict | None = None):
    """The loss ``compile`` gets."""
    import tensorflow as tf

    return spec if isinstance(spec, str) else tf.keras.losses.deserialize(
        spec, custom_objects=custom_objects)


def metrics_spec(metrics) -> list:
    """Metric names or Keras ``Metric`` objects as the ranks get them."""
    if isinstance(metrics, (str, dict)) or not hasattr(metrics, "__iter__"):
        raise InputError("metrics must be a list of names or tf.keras.metrics.Metric objects.")
    specs = []
    for metric in metrics:
        if isinstance(metric, (str, dict)):
            specs.append(metric)
            continue
        import tensorflow as tf

        if not isinstance(metric, tf.keras.metrics.Metric):
            raise InputError(f"metrics: {metric!r} is not a name or a tf.keras.metrics.Metric.")
        specs.append(plain(tf.keras.metrics.serialize(metric)))
    return specs


def make_metrics(specs: list, custom_objects: dict | None = None) -> list:
    """The metrics ``compile`` gets (fresh objects, one set per rank)."""
    import tensorflow as tf

    return [s if isinstance(s, str) else tf.keras.metrics.deserialize(
        s, custom_objects=custom_objects) for s in specs]


def spec_label(spec: str | dict) -> str:
    """A short readable form of a spec (``Adam(learning_rate=0.002, ...)``) for logs and MLflow."""
    if isinstance(spec, str):
        return spec
    config = spec.get("config") or {}
    if not isinstance(config, dict):
        return str(config)
    name = spec.get("class_name")
    shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in config.items()
                      if k != "is_legacy_optimizer" and v is not None
                      and not (k == "name" and v == name))
    return f"{name}({shown})"[:500]


# --- custom objects ---------------------------------------------------------------------------

def keyed_custom_objects(custom_objects: dict | None) -> dict:
    """``customObjects`` also keyed by each object's Keras registered name (``"pkg>Name"``).

    Computed where the classes were registered (the driver), so a rank or a scoring worker,
    where the registering module may never have been imported, still resolves them.
    """
    if not custom_objects:
        return {}
    import tensorflow as tf

    keyed = dict(custom_objects)
    for obj in custom_objects.values():
        keyed.setdefault(tf.keras.saving.get_registered_name(obj), obj)
    return keyed


def import_paths(custom_objects: dict | None) -> dict[str, str]:
    """``{name: "module:qualname"}``: how a saved model or Estimator records its custom objects
    (a reference to importable code, never a pickle)."""
    paths = {}
    for name, obj in (custom_objects or {}).items():
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not module or not qualname or "<locals>" in qualname:
            raise InputError(f"customObjects['{name}']: {obj!r} cannot be saved by reference; "
                             "define it at the top level of an importable module.")
        paths[name] = f"{module}:{qualname}"
    return paths


def resolve_import_paths(paths: dict[str, str], where: str) -> dict:
    """Import what :func:`import_paths` recorded; an unimportable one is a clear error."""
    resolved = {}
    for name, path in (paths or {}).items():
        module_name, _, qualname = path.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as err:
            raise InputError(f"{where}: custom object '{name}' was saved as {path}, which "
                             f"cannot be imported here ({err}); install or ship (--py-files) "
                             "the module that defines it.") from None
        resolved[name] = obj
    return resolved
