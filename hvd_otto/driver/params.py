"""The Estimator's and the Model's Params, generated from the table in ``common.defaults``.

pyspark's shared mixins (``HasFeaturesCol`` …, ``HasSeed``) supply the params whose name and
meaning are Spark's own; every other Param, its default, its doc and its ``setX``/``getX``
come from one :class:`~hvd_otto.common.defaults.ParamSpec` each, so nothing is written twice.
"""

from __future__ import annotations

from typing import Iterable

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasProbabilityCol,
    HasSeed,
)

from ..common.defaults import MODEL_PARAMS, SHARED_DEFAULTS, TRAINING_PARAMS, ParamSpec

CONVERTERS = {
    "int": TypeConverters.toInt,
    "float": TypeConverters.toFloat,
    "str": TypeConverters.toString,
    "bool": TypeConverters.toBoolean,
    "list_int": TypeConverters.toListInt,
    "object": TypeConverters.identity,
}

SHARED_NAMES = ("featuresCol", "labelCol", "predictionCol", "probabilityCol", "seed")


def _capitalised(name: str) -> str:
    return name[0].upper() + name[1:]


def _getter(name: str):
    def get(self):
        param = getattr(self, name)
        return self.getOrDefault(param) if self.isDefined(param) else None

    get.__name__ = f"get{_capitalised(name)}"
    get.__doc__ = f"The value of ``{name}`` (``None`` when unset and without a default)."
    return get


def _setter(name: str):
    def set_(self, value):
        return self._set(**{name: value})

    set_.__name__ = f"set{_capitalised(name)}"
    set_.__doc__ = f"Set ``{name}``; returns self for chaining."
    return set_


def declare_params(specs: Iterable[ParamSpec], accessors_for: Iterable[str] = ()):
    """Class decorator: add a Param with ``getX``/``setX`` per spec, and setters (plus getters
    where pyspark has none) for the already-declared params named in ``accessors_for``."""

    def decorate(cls):
        for spec in specs:
            setattr(cls, spec.name, Param(Params._dummy(), spec.name, spec.doc,
                                          typeConverter=CONVERTERS[spec.kind]))
        for name in [spec.name for spec in specs] + list(accessors_for):
            for prefix, make in (("get", _getter), ("set", _setter)):
                attr = f"{prefix}{_capitalised(name)}"
                if attr not in cls.__dict__ and not any(attr in base.__dict__
                                                        for base in cls.__mro__[1:]
                                                        if base.__module__.startswith("pyspark")):
                    setattr(cls, attr, make(name))
        return cls

    return decorate


def table_defaults(specs: Iterable[ParamSpec], shared: Iterable[str] = ()) -> dict:
    """The defaults to pass to ``_setDefault``: the table's (unset ones skipped) and shared."""
    values = {s.name: list(s.default) if isinstance(s.default, list) else s.default
              for s in specs if s.default is not None}  # no list shared between instances
    values.update({name: SHARED_DEFAULTS[name] for name in shared})
    return values


@declare_params(MODEL_PARAMS, accessors_for=SHARED_NAMES[:4])
class HorovodKerasModelParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol):
    """Params shared by the Estimator and the fitted Model."""

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(**table_defaults(MODEL_PARAMS, SHARED_NAMES[:4]))


@declare_params(TRAINING_PARAMS, accessors_for=("seed",))
class HorovodKerasEstimatorParams(HorovodKerasModelParams, HasSeed):
    """The Estimator's training Params (see ``common.defaults.TRAINING_PARAMS``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(**table_defaults(TRAINING_PARAMS, ("seed",)))
