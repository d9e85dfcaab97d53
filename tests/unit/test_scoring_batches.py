"""transform()'s Python side: Arrow batches of feature arrays → one float32 column per class."""

import pickle

import numpy as np
import pandas as pd
import pytest

from hvd_otto.driver import model as model_module
from hvd_otto.driver.model import score_batches

FIELDS = [f"p{i}" for i in range(3)]


def _softmax_of_sums(calls):
    def predict(x):
        calls.append(len(x))
        logits = np.stack([x.sum(axis=1), -x.sum(axis=1), np.zeros(len(x))], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float64)  # float64 on purpose
    return predict


def _batch(rows, width=4, seed=0):
    x = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return pd.Series(list(x)), x


def _loader(predict, loads=None):
    def load():
        if loads is not None:
            loads.append(1)
        return predict
    return load


def test_rows_are_scored_in_chunks_and_keep_their_order():
    calls = []
    series, x = _batch(10)
    (out,) = list(score_batches(iter([series]), _loader(_softmax_of_sums(calls)), 4, FIELDS, 4))
    assert calls == [4, 4, 2]
    assert list(out.columns) == FIELDS and all(out.dtypes == np.float32)
    expected = _softmax_of_sums([])(x)
    assert np.allclose(out.to_numpy(), expected, atol=1e-6)
    assert (out.to_numpy().argmax(axis=1) == expected.argmax(axis=1)).all()


def test_one_frame_per_arrow_batch_empty_batches_stay_empty_and_load_nothing():
    first, _ = _batch(3, seed=1)
    second, _ = _batch(5, seed=2)
    empty = pd.Series([], dtype=object)
    loads = []
    frames = list(score_batches(iter([empty, first, empty, second]),
                                _loader(_softmax_of_sums([]), loads), 100, FIELDS))
    assert [len(f) for f in frames] == [0, 3, 0, 5] and loads == [1]
    assert list(frames[0].columns) == FIELDS and all(frames[0].dtypes == np.float32)
    loads.clear()
    assert len(list(score_batches(iter([empty]), _loader(None, loads), 8, FIELDS))) == 1
    assert loads == []  # an empty partition never loads the model


def test_features_of_the_wrong_width_or_missing_are_clear_errors():
    series, _ = _batch(3, width=4)
    with pytest.raises(ValueError, match=r"rows have \[4\] feature values; the model was "
                                         r"trained on 93"):
        list(score_batches(iter([series]), _loader(_softmax_of_sums([])), 8, FIELDS, 93))
    ragged = pd.Series([np.zeros(4, np.float32), np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match=r"rows have \[3, 4\] feature values"):
        list(score_batches(iter([ragged]), _loader(_softmax_of_sums([])), 8, FIELDS))
    nulls = pd.Series([np.zeros(4, np.float32), None])
    with pytest.raises(ValueError, match=r"1 row\(s\) of this batch have no features"):
        list(score_batches(iter([nulls]), _loader(_softmax_of_sums([])), 8, FIELDS))


def test_the_udf_is_a_scalar_iterator_pandas_udf_of_one_float_per_class():
    """Its type hints (strings under ``from __future__ import annotations``) must resolve to
    the iterator form, or Spark would call it once per batch with the wrong arguments."""
    from pyspark.rdd import PythonEvalType

    from hvd_otto.driver.model import scoring_udf

    udf = scoring_udf(_loader(None), 8, FIELDS, 4)
    assert udf.evalType == PythonEvalType.SQL_SCALAR_PANDAS_ITER_UDF
    assert [f.name for f in udf.returnType.fields] == FIELDS
    assert {f.dataType.simpleString() for f in udf.returnType.fields} == {"float"}
    assert not udf.deterministic


def test_a_model_of_another_width_is_a_clear_error():
    series, _ = _batch(2)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 2 rows; expected \(2, 4\)"):
        list(score_batches(iter([series]), _loader(_softmax_of_sums([])), 8, [*FIELDS, "p3"]))


def test_the_worker_loader_pickles_by_reference_so_its_cache_is_the_workers():
    """Tasks must find the predict function this worker already loaded: the loader travels
    as a reference to the module's function, not as a copy carrying an empty cache."""
    from pyspark import cloudpickle

    restored = pickle.loads(cloudpickle.dumps(model_module.worker_predict_fn))
    assert restored is model_module.worker_predict_fn
    model_module._PREDICT_FNS["digest/plain"] = sentinel = object()
    try:
        assert model_module.worker_predict_fn("digest", None, {}) is sentinel
    finally:
        model_module._PREDICT_FNS.clear()
