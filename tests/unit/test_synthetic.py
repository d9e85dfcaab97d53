"""The embedded default data: Otto's shape and class priors, sparse counts."""

import numpy as np
import pytest
from helpers import OTTO_CLASS_COUNTS

from hvd_otto.data import synthetic


def test_synthetic_data_is_otto_shaped_and_learnable_not_trivial():
    frame = synthetic.generate()
    assert len(frame) == 61878 and frame.shape[1] == 95
    features = frame.filter(like="feat_").to_numpy()
    assert features.dtype.kind == "i" and (features >= 0).all()
    assert 0.6 < (features == 0).mean() < 0.9  # sparse like Otto
    priors = frame["target"].value_counts(normalize=True).sort_index()
    expected = np.array(OTTO_CLASS_COUNTS) / sum(OTTO_CLASS_COUNTS)
    assert np.abs(priors.to_numpy() - expected).max() < 0.01


def test_same_seed_same_rows_and_bad_sizes_refused():
    assert synthetic.generate(50, seed=3).equals(synthetic.generate(50, seed=3))
    assert not synthetic.generate(50, seed=3).equals(synthetic.generate(50, seed=4))
    with pytest.raises(ValueError):
        synthetic.generate(0)
