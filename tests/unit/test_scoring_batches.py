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


def test_rows_are_scored_in_chunks_and_keep_their_order():
    calls = []
    series, x = _batch(10)
    (out,) = list(score_batches(iter([series]), _softmax_of_sums(calls), 4, FIELDS))
    assert calls == [4, 4, 2]
    assert list(out.columns) == FIELDS and all(out.dtypes == np.float32)
    expected = _softmax_of_sums([])(x)
    assert np.allclose(out.to_numpy(), expected, atol=1e-6)
    assert (out.to_numpy().argmax(axis=1) == expected.argmax(axis=1)).all()


def test_one_frame_per_arrow_batch_and_empty_batches_stay_empty():
    first, _ = _batch(3, seed=1)
    second, _ = _batch(5, seed=2)
    empty = pd.Series([], dtype=object)
    frames = list(score_batches(iter([first, empty, second]), _softmax_of_sums([]), 100,
                                FIELDS))
    assert [len(f) for f in frames] == [3, 0, 5]
    assert list(frames[1].columns) == FIELDS and all(frames[1].dtypes == np.float32)


def test_a_model_of_another_width_is_a_clear_error():
    series, _ = _batch(2)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for 2 rows; expected \(2, 4\)"):
        list(score_batches(iter([series]), _softmax_of_sums([]), 8, [*FIELDS, "p3"]))


def test_the_worker_loader_pickles_by_reference_so_its_cache_is_the_workers():
    """Tasks must find the predict function this worker already loaded: the loader travels
    as a reference to the module's function, not as a copy carrying an empty cache."""
    from pyspark import cloudpickle

    restored = pickle.loads(cloudpickle.dumps(model_module.worker_predict_fn))
    assert restored is model_module.worker_predict_fn
    model_module._PREDICT_FNS["digest"] = sentinel = object()
    try:
        assert model_module.worker_predict_fn("digest", None, {}) is sentinel
    finally:
        model_module._PREDICT_FNS.clear()
