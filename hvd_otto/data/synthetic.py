"""An Otto-shaped synthetic data set: the embedded default when the real files are absent.

Same schema as Kaggle's ``train.csv`` (``id``, ``feat_1`` … ``feat_93`` integer counts,
``target`` = ``Class_1`` … ``Class_9`` with Otto's class priors), seeded and deterministic.
Each class has its own mean count profile; counts are over-dispersed (gamma-mixed Poisson)
and mostly zero, and two pairs of classes share most of their profile (as Class_2/Class_3 do
in Otto), so a model learns it well but not perfectly.
"""

from __future__ import annotations

import numpy as np

#: Class counts of the real Otto train.csv (Class_1 … Class_9).
OTTO_CLASS_COUNTS = (1929, 16122, 8004, 2691, 2739, 14135, 2839, 8464, 4955)
OTTO_ROWS = sum(OTTO_CLASS_COUNTS)
OTTO_FEATURES = 93


def generate(rows: int = OTTO_ROWS, seed: int = 42, n_features: int = OTTO_FEATURES,
             class_counts=OTTO_CLASS_COUNTS):
    """Return a pandas DataFrame with ``id``, ``feat_1..feat_N`` (int) and ``target``."""
    import pandas as pd

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    priors = np.asarray(class_counts, dtype=float) / sum(class_counts)
    n_classes = len(priors)
    base = np.exp(rng.uniform(np.log(0.03), np.log(1.5), size=n_features))
    shift = rng.normal(0.0, 1.1, size=(n_classes, n_features))
    # Classes 2/3 and 7/8 (1-based) share most of their profile: the hard pairs.
    for a, b in ((1, 2), (6, 7)):
        if b < n_classes:
            shift[b] = 0.75 * shift[a] + 0.25 * shift[b]
    profile = base * np.exp(shift)
    labels = rng.choice(n_classes, size=rows, p=priors)
    activity = rng.gamma(shape=2.0, scale=0.5, size=(rows, 1))
    noise = rng.gamma(shape=0.6, scale=1 / 0.6, size=(rows, n_features))
    counts = rng.poisson(profile[labels] * activity * noise)
    frame = pd.DataFrame(counts.astype(np.int64),
                         columns=[f"feat_{j + 1}" for j in range(n_features)])
    frame.insert(0, "id", np.arange(1, rows + 1))
    frame["target"] = np.array([f"Class_{c + 1}" for c in range(n_classes)])[labels]
    return frame


def write_csv(path: str, rows: int = OTTO_ROWS, seed: int = 42, **kwargs) -> str:
    """Write :func:`generate`'s rows as a CSV file (``.gz`` compresses) and return the path."""
    generate(rows, seed, **kwargs).to_csv(path, index=False)
    return path
