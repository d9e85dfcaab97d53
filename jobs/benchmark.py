"""Benchmarks on the real Otto data, each against a plain single-process baseline run in the
same script (the machines are shared and noisy: compare ratios, not absolute seconds).

    python jobs/benchmark.py ingest [--otto DIR] [--out results.json]
    python jobs/benchmark.py train  [--otto DIR] [--epochs 20] [--out results.json]

``ingest``: ``prepare`` with Spark vs pyarrow CSV → numpy transform → Parquet.
``train``: tf.keras ``model.fit`` on numpy vs hvd-otto with 1 and 2 ranks (same model, batch
size and epochs), holdout quality, and ``transform`` rows/s vs ``model.predict`` on Otto's test file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DEFAULT_OTTO = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "otto")


def baseline_prepare(train_zip: str, out: str, validation: float = 0.2, seed: int = 42) -> int:
    """Single process: pyarrow CSV read → log1p → standard scaling → split → Parquet."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    with zipfile.ZipFile(train_zip) as archive:
        data = archive.read(archive.namelist()[0])
    table = pa_csv.read_csv(io.BytesIO(data))
    features = [c for c in table.column_names if c not in ("id", "target")]
    x = np.column_stack([table[c].to_numpy() for c in features]).astype(np.float64)
    labels = np.array(table["target"].to_pylist())
    names = sorted(set(labels))
    y = np.searchsorted(names, labels).astype(np.int32)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(y), dtype=bool)
    for k in range(len(names)):
        idx = np.flatnonzero(y == k)
        is_val[rng.permutation(idx)[: round(validation * len(idx))]] = True
    x = np.log1p(x)
    mean, std = x[~is_val].mean(axis=0), x[~is_val].std(axis=0, ddof=1)
    x = ((x - mean) / np.where(std > 0, std, 1)).astype(np.float32)
    ids = table["id"].cast(pa.string())
    for name, mask in (("train", ~is_val), ("validation", is_val)):
        flat = pa.array(x[mask].ravel())
        feats = pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(pa.float32()))
        out_table = pa.table({"id": ids.filter(pa.array(mask)), "features": feats,
                              "label": pa.array(y[mask])})
        os.makedirs(os.path.join(out, name), exist_ok=True)
        pq.write_table(out_table, os.path.join(out, name, "part-0.parquet"))
    return len(y)


def bench_ingest(args) -> dict:
    from hvd_otto.ingest import prepare
    from hvd_otto.spark import get_spark

    train_zip = os.path.join(args.otto, "train.csv.zip")
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-")
    started = time.perf_counter()
    rows = baseline_prepare(train_zip, os.path.join(tmp, "baseline"))
    baseline = time.perf_counter() - started

    started = time.perf_counter()
    spark = get_spark(args.master)
    session = time.perf_counter() - started
    result = prepare(spark, train_zip, os.path.join(tmp, "spark"))
    spark_total = time.perf_counter() - started
    warm = prepare(spark, train_zip, os.path.join(tmp, "spark2"))
    figures = {
        "rows": rows,
        "baseline_pyarrow_seconds": baseline,
        "spark_session_start_seconds": session,
        "spark_prepare_first_seconds": result.seconds,
        "spark_prepare_warm_seconds": warm.seconds,
        "spark_total_with_start_seconds": spark_total,
        "ratio_warm_vs_baseline": warm.seconds / baseline,
        "ratio_with_start_vs_baseline": spark_total / baseline,
        "master": spark.sparkContext.master,
    }
    print(f"ingest of {rows:,} Otto rows (master {figures['master']}):")
    print(f"  baseline (pyarrow, one process)      {baseline:7.2f} s")
    print(f"  hvd-otto prepare, warm session       {warm.seconds:7.2f} s  "
          f"({figures['ratio_warm_vs_baseline']:.1f}x baseline)")
    print(f"  hvd-otto prepare, first in session   {result.seconds:7.2f} s")
    print(f"  ... plus SparkSession start-up       {spark_total:7.2f} s  "
          f"({figures['ratio_with_start_vs_baseline']:.1f}x baseline)")
    return figures


def _numpy_split(spark, path):
    frame = spark.read.parquet(path).toPandas()
    return np.stack(frame["features"].to_numpy()).astype(np.float32), frame["label"].to_numpy()


def _log_loss(probs, y):
    p = np.clip(probs[np.arange(len(y)), y], 1e-15, 1)
    return float(-np.log(p).mean())


def bench_train(args) -> dict:
    import tensorflow as tf

    from hvd_otto.estimator import HorovodKerasEstimator
    from hvd_otto.evaluate import evaluate
    from hvd_otto.ingest import prepare
    from hvd_otto.model import build_mlp, make_optimizer
    from hvd_otto.spark import get_spark

    spark = get_spark(args.master)
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-")
    data = os.path.join(tmp, "otto")
    print("preparing the real Otto train and test files")
    prepare(spark, os.path.join(args.otto, "train.csv.zip"), data,
            test=os.path.join(args.otto, "test.csv.zip"))
    x, y = _numpy_split(spark, os.path.join(data, "train"))
    xh, yh = _numpy_split(spark, os.path.join(data, "validation"))
    test_df = spark.read.parquet(os.path.join(data, "test"))
    xt = np.stack(test_df.toPandas()["features"].to_numpy()).astype(np.float32)
    epochs, batch = args.epochs, args.batch_size
    est_args = dict(epochs=epochs, batchSize=batch, validationFraction=0.0,
                    earlyStoppingPatience=0, lrDecayPatience=0, warmupEpochs=0, verbose=0,
                    storePath=os.path.join(tmp, "store"))
    lr = HorovodKerasEstimator().getLearningRate()
    results = {}

    print(f"baseline: tf.keras model.fit on numpy, {epochs} epochs, batch {batch}")
    started = time.perf_counter()
    model = build_mlp(x.shape[1], int(y.max()) + 1)
    model.compile(make_optimizer("adam", lr), "sparse_categorical_crossentropy", ["accuracy"])
    epoch_times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[Timer()])
    probs = model.predict(xh, batch_size=4096, verbose=0)
    results["baseline"] = {
        "samples_per_second": len(y) * epochs / sum(epoch_times),
        "launch_seconds": 0.0,
        "end_to_end_seconds": time.perf_counter() - started,
        "holdout_log_loss": _log_loss(probs, yh),
        "holdout_accuracy": float((probs.argmax(1) == yh).mean()),
    }
    started = time.perf_counter()
    model.predict(xt, batch_size=4096, verbose=0)
    predict_rps = len(xt) / (time.perf_counter() - started)

    train_df = spark.read.parquet(os.path.join(data, "train")).cache()
    train_df.count()
    holdout = spark.read.parquet(os.path.join(data, "validation"))
    fitted = {}
    for ranks in (1, 2):
        print(f"hvd-otto: {ranks} rank(s), {epochs} epochs, batch {batch // ranks} per rank")
        started = time.perf_counter()
        # Same global batch size as the baseline: batch // ranks per rank.
        est = HorovodKerasEstimator(numProc=ranks, **{**est_args, "batchSize": batch // ranks})
        fitted[ranks] = est.fit(train_df)
        end_to_end = time.perf_counter() - started
        history = fitted[ranks].getHistory()
        figures = evaluate(fitted[ranks].transform(holdout))
        results[f"hvd_otto_{ranks}_ranks"] = {
            "samples_per_second": len(y) * epochs / sum(h["seconds"] for h in history),
            "launch_seconds": fitted[ranks].getSummary()["launch_seconds"],
            "end_to_end_seconds": end_to_end,
            "holdout_log_loss": figures["log_loss"],
            "holdout_accuracy": figures["accuracy"],
        }

    print("hvd-otto: default configuration, 2 ranks (early stopping on a 10% validation split)")
    started = time.perf_counter()
    default = HorovodKerasEstimator(numProc=2, verbose=0,
                                    storePath=os.path.join(tmp, "store")).fit(train_df)
    figures = evaluate(default.transform(holdout))
    results["hvd_otto_default_2_ranks"] = {
        "epochs_run": len(default.getHistory()), "best_epoch": default.getSummary()["best_epoch"],
        "end_to_end_seconds": time.perf_counter() - started,
        "holdout_log_loss": figures["log_loss"], "holdout_accuracy": figures["accuracy"],
    }

    started = time.perf_counter()
    fitted[2].transform(test_df).write.format("noop").mode("overwrite").save()
    transform_rps = len(xt) / (time.perf_counter() - started)
    results["transform"] = {"rows": len(xt), "transform_rows_per_second": transform_rps,
                            "numpy_predict_rows_per_second": predict_rps,
                            "ratio": transform_rps / predict_rps}

    base = results["baseline"]["samples_per_second"]
    print(f"\n{'run':<26}{'samples/s':>11}{'x base':>8}{'launch s':>10}{'total s':>9}"
          f"{'log loss':>10}{'accuracy':>10}")
    for name, r in results.items():
        if name == "transform":
            continue
        sps = r.get("samples_per_second")
        print(f"{name:<26}{(f'{sps:,.0f}' if sps else '-'):>11}"
              f"{(f'{sps / base:.2f}' if sps else '-'):>8}"
              f"{r.get('launch_seconds', float('nan')):>10.1f}{r['end_to_end_seconds']:>9.1f}"
              f"{r['holdout_log_loss']:>10.4f}{r['holdout_accuracy']:>10.4f}")
    t = results["transform"]
    print(f"transform on {t['rows']:,} test rows: {t['transform_rows_per_second']:,.0f} rows/s vs "
          f"model.predict {t['numpy_predict_rows_per_second']:,.0f} rows/s "
          f"({t['ratio']:.2f}x)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("ingest", "train"))
    parser.add_argument("--otto", default=DEFAULT_OTTO, help="folder with Otto's zip files")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="global batch size (per rank: this / ranks)")
    parser.add_argument("--out", default=None, help="append the figures to this JSON file")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.otto, "train.csv.zip")):
        print(f"error: Otto's train.csv.zip not found in {args.otto}; pass --otto DIR",
              file=sys.stderr)
        return 2
    figures = bench_ingest(args) if args.what == "ingest" else bench_train(args)
    if args.out:
        existing = json.load(open(args.out)) if os.path.exists(args.out) else {}
        existing[args.what] = figures
        with open(args.out, "w") as f:
            json.dump(existing, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
