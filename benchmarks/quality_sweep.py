"""Holdout log loss of the default MLP under other feature transforms and of a few other
MLP shapes, in one process.

    .venv/bin/python benchmarks/quality_sweep.py --otto ../shared/data/otto \\
        --features log1p sqrt log1p+tfidf log1p+rowsum log1p+nonzero --seeds 42 7
    .venv/bin/python benchmarks/quality_sweep.py --otto ../shared/data/otto \\
        --features log1p --models default 2x1024_d0.55_0.45 --seeds 42 7 1

Otto's train file, a stratified 20% holdout (the benchmark's), 10% of the rest for
validation; the Estimator's defaults (3×512, dropout 0.4, Adam 0.001, batch 128, halve the
rate after an epoch without improvement, stop after 4, best weights restored) with plain
tf.keras. Each transform is standard-scaled on the training rows. The spread between seeds
is the noise any gain has to beat.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # the benchmark's Otto reader and stratified split

TRANSFORMS = ("log1p", "sqrt", "log1p+tfidf", "log1p+rowsum", "log1p+nonzero")

#: MLP shapes besides the default: hidden units and the dropout after each hidden layer.
MODELS = {
    "default": None,  # the Estimator's (build_mlp with no arguments)
    "2x1024_d0.5": ([1024, 1024], [0.5, 0.5]),
    "2x1024_d0.55_0.45": ([1024, 1024], [0.55, 0.45]),
    "funnel_1024_512_256": ([1024, 512, 256], [0.5, 0.4, 0.3]),
}


def build_model(name: str, n_features: int, n_classes: int):
    """The default MLP, or one of :data:`MODELS` (Dense relu + Dropout per hidden layer)."""
    import tensorflow as tf

    from hvd_otto.common.keras_model import build_mlp

    if MODELS[name] is None:
        return build_mlp(n_features, n_classes)
    layers = [tf.keras.Input(shape=(n_features,), name="features")]
    for units, rate in zip(*MODELS[name]):
        layers += [tf.keras.layers.Dense(units, activation="relu"),
                   tf.keras.layers.Dropout(rate)]
    layers.append(tf.keras.layers.Dense(n_classes, activation="softmax", dtype="float32"))
    return tf.keras.Sequential(layers, name=name)


def features(x: np.ndarray, kind: str, fit_rows: np.ndarray) -> np.ndarray:
    """Counts → one of :data:`TRANSFORMS`, standard-scaled on ``fit_rows`` (float32)."""
    log = np.log1p(x)
    if kind == "log1p":
        f = log
    elif kind == "sqrt":  # Anscombe
        f = 2 * np.sqrt(x + 3 / 8)
    elif kind == "log1p+tfidf":
        idf = np.log(fit_rows.sum() / (1 + (x[fit_rows] > 0).sum(axis=0)))
        f = np.hstack([log, np.sqrt(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * idf)])
    elif kind == "log1p+rowsum":
        f = np.hstack([log, np.log1p(x.sum(axis=1, keepdims=True)),
                       np.log1p((x > 0).sum(axis=1, keepdims=True))])
    elif kind == "log1p+nonzero":
        f = np.hstack([log, (x > 0).astype(np.float64)])
    else:
        raise ValueError(f"unknown transform {kind}; use one of {TRANSFORMS}")
    mean, std = f[fit_rows].mean(axis=0), f[fit_rows].std(axis=0)
    return ((f - mean) / np.where(std > 0, std, 1)).astype(np.float32)


def fit_and_score(tf, f, y, train, val, holdout, shape: str, seed: int, epochs: int) -> str:
    """Train one model as the Estimator's defaults do (Adam 0.001, batch 128, halve the rate
    after an epoch without improvement, stop after 4, best weights); its holdout figures."""
    tf.keras.utils.set_random_seed(seed)
    model = build_model(shape, f.shape[1], int(y.max()) + 1)
    model.compile(tf.keras.optimizers.legacy.Adam(0.001), "sparse_categorical_crossentropy")
    started = time.perf_counter()
    history = model.fit(
        f[train], y[train], batch_size=128, epochs=epochs, verbose=0,
        validation_data=(f[val], y[val]),
        callbacks=[tf.keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=1),
                   tf.keras.callbacks.EarlyStopping(patience=4, restore_best_weights=True)])
    probs = model.predict(f[holdout], batch_size=8192, verbose=0)
    return (f"{len(history.history['loss'])} epochs, holdout log loss "
            f"{benchmark._log_loss(probs, y[holdout]):.4f}, accuracy "
            f"{(probs.argmax(1) == y[holdout]).mean():.4f} "
            f"({time.perf_counter() - started:.0f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--otto", required=True, help="folder with Otto's train.csv.zip")
    parser.add_argument("--features", nargs="+", default=list(TRANSFORMS), choices=TRANSFORMS)
    parser.add_argument("--models", nargs="+", default=["default"], choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)

    import tensorflow as tf

    _, x, y, names = benchmark._read_otto(os.path.join(args.otto, "train.csv.zip"))
    holdout = benchmark._stratified_mask(y, len(names), 0.2, 42)
    rest = np.random.default_rng(0).permutation(np.flatnonzero(~holdout))
    val, train = rest[: len(rest) // 10], rest[len(rest) // 10:]
    fit_rows = np.zeros(len(y), dtype=bool)
    fit_rows[train] = True
    for kind in args.features:
        f = features(x, kind, fit_rows)
        for shape in args.models:
            for seed in args.seeds:
                print(f"{kind:<14} {shape:<20} seed {seed:>3}: "
                      f"{fit_and_score(tf, f, y, train, val, holdout, shape, seed, args.epochs)}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
