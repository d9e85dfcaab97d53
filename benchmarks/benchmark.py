"""Benchmarks on the real Otto data, each against a plain single-process baseline run in the
same script (the machines are shared and noisy: compare ratios, not absolute seconds).

    python benchmarks/benchmark.py ingest --otto DIR [--scale 10] [--out results.json]
    python benchmarks/benchmark.py train  --otto DIR [--epochs 20] [--out results.json]
    python benchmarks/benchmark.py memory [--rows 200000,2000000] [--train-rows 0] [--out ...]
    python benchmarks/benchmark.py retry  --otto DIR [--epochs 6] [--out results.json]

``--otto`` (or ``HVD_OTTO_DATA``) is the folder holding Kaggle's ``train.csv.zip`` and
``test.csv.zip``; the repository never contains them. The package must be installed
(``make setup`` does it); every default model setting is the Estimator's.

``ingest``: ``prepare`` with Spark vs pyarrow CSV → numpy transform → Parquet. With
``--scale N`` both read Otto × N (the train file repeated N times with unique ids, written once
as a plain .csv), and ``hvd-otto prepare`` is also timed as a whole process.
``train``: tf.keras ``model.fit`` on numpy vs hvd-otto with 1 and 2 ranks (same model, batch
size and epochs), holdout quality, and ``transform`` rows/s vs ``model.predict`` on Otto's test file.
``memory``: peak memory of ``hvd-otto predict`` (driver, JVM and Python workers together) on
synthetic test files of each ``--rows`` size, each in a fresh process; with ``--train-rows N``
also trains with the default settings on N synthetic rows (Otto × 10 = 618780).
``retry``: the same 2-rank fit on Otto's prepared train split, uninterrupted and with one rank
killed mid-epoch (retried from the last checkpoint): the extra seconds one failure costs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile

import numpy as np

OTTO_ENV = "HVD_OTTO_DATA"


def _read_train_bytes(train: str) -> bytes:
    """The bytes of Otto's train CSV, from the Kaggle .zip or a plain .csv."""
    if train.lower().endswith(".zip"):
        with zipfile.ZipFile(train) as archive:
            return archive.read(archive.namelist()[0])
    with open(train, "rb") as f:
        return f.read()


def baseline_prepare(train_zip: str, out: str, validation: float = 0.2, seed: int = 42) -> int:
    """Single process: pyarrow CSV read → log1p → standard scaling → split → Parquet."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    data = _read_train_bytes(train_zip)
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


def scaled_otto(train_zip: str, scale: int, path: str) -> str:
    """Write Otto's train file repeated ``scale`` times, ids made unique, as a plain CSV."""
    header, _, body = _read_train_bytes(train_zip).partition(b"\n")
    lines = body.rstrip(b"\n").split(b"\n")
    ids, rests = zip(*(line.split(b",", 1) for line in lines))
    ids = [int(i) for i in ids]
    step = max(ids)
    with open(path, "wb") as f:
        f.write(header.rstrip(b"\r") + b"\n")
        f.writelines(b"".join(b"%d,%s\n" % (i + k * step, rest.rstrip(b"\r"))
                              for i, rest in zip(ids, rests)) for k in range(scale))
    return path


def _timed_cli_prepare(train: str, out: str, master: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m hvd_otto.app.cli prepare`` as a whole process, JVM
    start included. CPU is user + system of every process of its tree (the JVM and the Python
    workers), sampled every 0.1 s: the last 0.1 s of each process is missed."""
    import subprocess

    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hvd_otto.app.cli", "prepare", "--train",
                             train, "--out", out, "--master", master],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
        except psutil.Error:
            pass
        time.sleep(0.1)
    output = proc.stdout.read()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"hvd-otto prepare failed:\n{output[-3000:]}")
    return seconds, sum(cpu.values())


def bench_ingest(args) -> dict:
    from hvd_otto import get_spark, prepare

    train_zip = os.path.join(args.otto, "train.csv.zip")
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-")
    if args.scale > 1:
        train_zip = scaled_otto(train_zip, args.scale, os.path.join(tmp, f"otto_x{args.scale}.csv"))
    started, cpu = time.perf_counter(), time.process_time()
    rows = baseline_prepare(train_zip, os.path.join(tmp, "baseline"))
    baseline, baseline_cpu = time.perf_counter() - started, time.process_time() - cpu

    started = time.perf_counter()
    spark = get_spark(args.master)
    session = time.perf_counter() - started
    result = prepare(spark, train_zip, os.path.join(tmp, "spark"))
    spark_total = time.perf_counter() - started
    warm = prepare(spark, train_zip, os.path.join(tmp, "spark2"))
    process, master = None, spark.sparkContext.master
    if args.scale > 1:
        spark.stop()  # the whole-process run starts its own JVM; do not compete with this one
        process, process_cpu = _timed_cli_prepare(train_zip, os.path.join(tmp, "cli"),
                                                  args.master)
    figures = {
        "rows": rows,
        "scale": args.scale,
        "baseline_pyarrow_seconds": baseline,
        "spark_session_start_seconds": session,
        "spark_prepare_first_seconds": result.seconds,
        "spark_prepare_warm_seconds": warm.seconds,
        "spark_total_with_start_seconds": spark_total,
        "ratio_warm_vs_baseline": warm.seconds / baseline,
        "ratio_with_start_vs_baseline": spark_total / baseline,
        "master": master,
    }
    if process is not None:
        figures["cli_prepare_process_seconds"] = process
        figures["ratio_cli_process_vs_baseline"] = process / baseline
        figures["baseline_cpu_seconds"] = baseline_cpu
        figures["cli_prepare_process_cpu_seconds"] = process_cpu
        figures["ratio_cli_process_cpu_vs_baseline"] = process_cpu / baseline_cpu
        figures["load_average_1min_at_end"] = os.getloadavg()[0]
    print(f"ingest of {rows:,} Otto rows (x{args.scale}, master {figures['master']}):")
    print(f"  baseline (pyarrow, one process)      {baseline:7.2f} s")
    print(f"  hvd-otto prepare, warm session       {warm.seconds:7.2f} s  "
          f"({figures['ratio_warm_vs_baseline']:.1f}x baseline)")
    print(f"  hvd-otto prepare, first in session   {result.seconds:7.2f} s")
    print(f"  ... plus SparkSession start-up       {spark_total:7.2f} s  "
          f"({figures['ratio_with_start_vs_baseline']:.1f}x baseline)")
    if process is not None:
        print(f"  hvd-otto prepare, whole process      {process:7.2f} s  "
              f"({figures['ratio_cli_process_vs_baseline']:.1f}x baseline)")
        print(f"  CPU seconds (user+sys): baseline {baseline_cpu:.2f}, whole process "
              f"{process_cpu:.2f} ({figures['ratio_cli_process_cpu_vs_baseline']:.1f}x); "
              f"load average {figures['load_average_1min_at_end']:.1f} on {os.cpu_count()} cores")
    return figures


def _numpy_split(spark, path):
    frame = spark.read.parquet(path).toPandas()
    return np.stack(frame["features"].to_numpy()).astype(np.float32), frame["label"].to_numpy()


def _log_loss(probs, y):
    p = np.clip(probs[np.arange(len(y)), y], 1e-15, 1)
    return float(-np.log(p).mean())


def _baseline_fit(x, y, xh, yh, xt, epochs: int, batch: int, lr: float):
    """The single-process baseline: the same model (Estimator defaults) with tf.keras on numpy."""
    import tensorflow as tf

    from hvd_otto.common.keras_model import build_mlp
    from hvd_otto.common.keras_objects import make_optimizer

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
    baseline = {
        "samples_per_second": len(y) * epochs / sum(epoch_times),
        "launch_seconds": 0.0,
        "end_to_end_seconds": time.perf_counter() - started,
        "holdout_log_loss": _log_loss(probs, yh),
        "holdout_accuracy": float((probs.argmax(1) == yh).mean()),
    }
    started = time.perf_counter()
    model.predict(xt, batch_size=4096, verbose=0)
    predict_rps = len(xt) / (time.perf_counter() - started)

    return baseline, predict_rps


def bench_train(args) -> dict:
    from hvd_otto import HorovodKerasEstimator, evaluate, get_spark, prepare

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

    results["baseline"], predict_rps = _baseline_fit(x, y, xh, yh, xt, epochs, batch, lr)

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


def _synthetic_csv(path: str, rows: int, seed: int, label: bool, chunk: int = 200_000) -> str:
    """Write ``rows`` Otto-shaped rows in chunks (ids unique), without holding them all."""
    from hvd_otto.data import synthetic

    for start in range(0, rows, chunk):
        frame = synthetic.generate(min(chunk, rows - start), seed + start)
        frame["id"] = np.arange(start + 1, start + len(frame) + 1)
        if not label:
            frame = frame.drop(columns=["target"])
        frame.to_csv(path, index=False, header=start == 0, mode="w" if start == 0 else "a")
    return path


def _run_measured(command: list[str], env: dict) -> dict:
    """Run a command; sample the RSS of its whole process tree every 0.2 s."""
    import subprocess

    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    root = psutil.Process(proc.pid)
    peak_total = peak_driver = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            sizes = {p.pid: p.memory_info().rss for p in tree if p.is_running()}
        except psutil.Error:
            continue
        peak_total = max(peak_total, sum(sizes.values()))
        peak_driver = max(peak_driver, sizes.get(proc.pid, 0))
        time.sleep(0.2)
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"seconds": time.perf_counter() - started, "peak_tree_mb": peak_total / 2**20,
            "peak_driver_python_mb": peak_driver / 2**20, "output": output}


def bench_memory(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-mem-")
    env = {**os.environ, "HVD_OTTO_MASTER": args.master}
    cli = [sys.executable, "-m", "hvd_otto.app.cli"]
    train_csv = _synthetic_csv(os.path.join(tmp, "train.csv"), 20_000, 1, label=True)
    model = os.path.join(tmp, "model")
    _run_measured([*cli, "train", "--train", train_csv, "--model", model, "--epochs", "2"], env)
    figures: dict = {"master": args.master, "predict": {}}
    print(f"scoring memory (hvd-otto predict, master {args.master}; peak RSS of the driver, "
          "its JVM and Python workers together):")
    for rows in [int(r) for r in args.rows.split(",")]:
        test_csv = _synthetic_csv(os.path.join(tmp, f"test-{rows}.csv"), rows, 7, label=False)
        out = os.path.join(tmp, f"submission-{rows}.csv")
        run = _run_measured([*cli, "predict", "--test", test_csv, "--model", model,
                             "--out", out], env)
        with open(out) as f:
            written = sum(1 for _ in f) - 1
        assert written == rows, (written, rows)
        figures["predict"][str(rows)] = {k: v for k, v in run.items() if k != "output"}
        print(f"  {rows:>10,} rows: peak {run['peak_tree_mb']:7,.0f} MB in all, driver Python "
              f"{run['peak_driver_python_mb']:5,.0f} MB, {run['seconds']:6.1f} s "
              f"({rows / run['seconds']:,.0f} rows/s)")
        os.remove(test_csv)
    if args.train_rows:
        train_big = _synthetic_csv(os.path.join(tmp, "train-big.csv"), args.train_rows, 3,
                                   label=True)
        out = os.path.join(tmp, "big-run")
        run = _run_measured([*cli, "pipeline", "--train", train_big, "--out", out], env)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        figures["train_big"] = {"rows": args.train_rows, "seconds": run["seconds"],
                                "peak_tree_mb": run["peak_tree_mb"],
                                "epochs": summary["epochs"],
                                "holdout": summary["holdout_figures"]}
        print(f"  training with default settings on {args.train_rows:,} rows: "
              f"{summary['epochs']} epochs, {run['seconds']:.0f} s, peak "
              f"{run['peak_tree_mb']:,.0f} MB; holdout log loss "
              f"{summary['holdout_figures']['log_loss']:.4f}, accuracy "
              f"{summary['holdout_figures']['accuracy']:.4f}")
    return figures


def bench_retry(args) -> dict:
    from hvd_otto import HorovodKerasEstimator, get_spark, prepare
    from hvd_otto.common.rank_config import FAULT_ENV

    spark = get_spark(args.master)
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-retry-")
    prepare(spark, os.path.join(args.otto, "train.csv.zip"), os.path.join(tmp, "data"))
    train = spark.read.parquet(os.path.join(tmp, "data", "train")).cache()
    train.count()
    runs = {}
    fault_epoch = max(2, args.epochs // 2 + 1)
    for name, fault in (("uninterrupted", None),
                        ("one rank killed", f"rank=1,epoch={fault_epoch},batch=50")):
        if fault:
            os.environ[FAULT_ENV] = fault
        est = HorovodKerasEstimator(numProc=2, epochs=args.epochs, earlyStoppingPatience=0,
                                    maxRetries=1, storePath=os.path.join(tmp, name), verbose=0)
        started = time.perf_counter()
        model = est.fit(train)
        seconds = time.perf_counter() - started
        os.environ.pop(FAULT_ENV, None)
        history = model.getHistory()
        runs[name] = {"seconds": seconds, "attempts": model.getSummary()["attempts"],
                      "epochs": [h["epoch"] for h in history],
                      "final_val_loss": history[-1]["val_loss"],
                      "val_loss": [round(h["val_loss"], 4) for h in history]}
    extra = runs["one rank killed"]["seconds"] - runs["uninterrupted"]["seconds"]
    figures = {"epochs": args.epochs, "fault": f"rank 1 killed in epoch {fault_epoch}",
               "runs": runs, "extra_seconds": extra}
    print(f"retry cost ({args.epochs} epochs on Otto's train split, 2 ranks):")
    for name, run in runs.items():
        print(f"  {name:<16} {run['seconds']:6.1f} s, attempts {run['attempts']}, epochs "
              f"{run['epochs'][0]}..{run['epochs'][-1]} ({len(run['epochs'])}), final val_loss "
              f"{run['final_val_loss']:.4f}")
    print(f"  one failure cost {extra:+.1f} s")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("ingest", "train", "memory", "retry"))
    parser.add_argument("--otto", default=os.environ.get(OTTO_ENV),
                        help=f"folder with Otto's train.csv.zip and test.csv.zip (default: "
                             f"${OTTO_ENV})")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--scale", type=int, default=1,
                        help="ingest: read Otto x SCALE (train rows repeated, ids unique) and "
                             "also time 'hvd-otto prepare' as a whole process")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default 20 for train, 6 for retry)")
    parser.add_argument("--rows", default="200000,2000000",
                        help="memory: sizes of the scored test files")
    parser.add_argument("--train-rows", type=int, default=0,
                        help="memory: also train on this many synthetic rows (618780 = Otto×10)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="global batch size (per rank: this / ranks)")
    parser.add_argument("--out", default=None, help="append the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.what != "memory" and not (
            args.otto and os.path.exists(os.path.join(args.otto, "train.csv.zip"))):
        print(f"error: Otto's train.csv.zip not found in {args.otto or '(no folder given)'}; "
              f"pass --otto DIR or set {OTTO_ENV}", file=sys.stderr)
        return 2
    if args.epochs is None:
        args.epochs = 6 if args.what == "retry" else 20
    bench = {"ingest": bench_ingest, "train": bench_train, "memory": bench_memory,
             "retry": bench_retry}[args.what]
    scratch = tempfile.mkdtemp(prefix="hvd-otto-bench-")
    tempfile.tempdir = scratch  # every temporary folder of this run lives here, removed after
    try:
        figures = bench(args)
    finally:
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)
    if args.out:
        existing = json.load(open(args.out)) if os.path.exists(args.out) else {}
        existing[args.what] = figures
        with open(args.out, "w") as f:
            json.dump(existing, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
