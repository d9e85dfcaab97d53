"""Benchmarks on the real Otto data, each against a plain single-process baseline run by the
same script (the machines are shared and noisy: compare ratios, not absolute seconds). The
training baselines run first and last, each in a fresh Python process of their own, and every
ratio is against the faster run.

    python benchmarks/benchmark.py ingest --otto DIR [--scale 10] [--out results.json]
    python benchmarks/benchmark.py train  --otto DIR [--epochs 20] [--out results.json]
    python benchmarks/benchmark.py memory [--rows 200000,2000000] [--train-rows 0] [--out ...]
    python benchmarks/benchmark.py retry  --otto DIR [--epochs 6] [--out results.json]
    python benchmarks/benchmark.py pipeline|scoring --otto DIR [--out results.json]
    python benchmarks/benchmark.py all    --otto DIR --out results.json

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
``pipeline``: end to end on Otto's train file (CSV → fitted PipelineModel → stratified 20%
holdout scored): the single-process Keras script, the pipeline job at 1 and 2 ranks, and
Horovod's own KerasEstimator, with each phase's seconds.
``scoring``: ``transform`` of Otto's test file with a saved PipelineModel (preprocessing
included, Parquet written) vs Keras ``predict`` on numpy.
``all``: ingest, train, pipeline and scoring in one run, with the machine they ran on.
``report --out results.json``: the README's tables (Markdown) from a run's JSON.
``retry``: the same 2-rank fit on Otto's prepared train split, uninterrupted and with one rank
killed mid-epoch (retried from the last checkpoint): the extra seconds one failure costs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
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


def _read_otto(train: str):
    """Otto's train file (.zip or .csv) read by pyarrow: the table, its float64 counts, class
    indices and the sorted class names."""
    import pyarrow.csv as pa_csv

    table = pa_csv.read_csv(io.BytesIO(_read_train_bytes(train)))
    features = [c for c in table.column_names if c not in ("id", "target")]
    x = np.column_stack([table[c].to_numpy() for c in features]).astype(np.float64)
    labels = np.array(table["target"].to_pylist())
    names = sorted(set(labels))
    return table, x, np.searchsorted(names, labels).astype(np.int32), names


def _stratified_mask(y: np.ndarray, n_classes: int, fraction: float, seed: int) -> np.ndarray:
    """True for a random ``fraction`` of each class's rows: the held-out split."""
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(y), dtype=bool)
    for k in range(n_classes):
        idx = np.flatnonzero(y == k)
        held_out[rng.permutation(idx)[: round(fraction * len(idx))]] = True
    return held_out


def _log_scaled(x: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """log1p, then standard scaling fitted on ``fit_rows`` only (float32)."""
    x = np.log1p(x)
    mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0, ddof=1)
    return ((x - mean) / np.where(std > 0, std, 1)).astype(np.float32)


def baseline_prepare(train_zip: str, out: str, validation: float = 0.2, seed: int = 42) -> int:
    """Single process: pyarrow CSV read → log1p → standard scaling → split → Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table, x, y, names = _read_otto(train_zip)
    is_val = _stratified_mask(y, len(names), validation, seed)
    x = _log_scaled(x, fit_rows=~is_val)
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


#: The functions :func:`in_fresh_process` may run (the single-process baselines).
FRESH_PROCESS_FUNCTIONS = ("baseline_script", "baseline_fit_from_arrays")
FRESH_PROCESS_FLAG = "--in-fresh-process"


def _check_fresh_process_function(function: str) -> None:
    if function not in FRESH_PROCESS_FUNCTIONS:
        raise ValueError(f"{function} is not one of {FRESH_PROCESS_FUNCTIONS}")


def in_fresh_process(function: str, **kwargs):
    """``function(**kwargs)`` of this script, run in a new Python process; its JSON result.

    The single-process baselines run this way, alone in their process: in the same process as
    the driver's Spark and the earlier runs, the Keras script took 57.7 s at the start of a run
    and 83.5 s at its end, against 47.8 s alone (the cause was not found).
    """
    _check_fresh_process_function(function)
    with tempfile.TemporaryDirectory(prefix="hvd-otto-bench-baseline-") as tmp:
        result = os.path.join(tmp, "result.json")
        subprocess.run([sys.executable, os.path.abspath(__file__), FRESH_PROCESS_FLAG, function,
                        json.dumps(kwargs), result], check=True)
        with open(result) as f:
            value = json.load(f)
    for figures in (value if isinstance(value, list) else [value]):
        if isinstance(figures, dict):
            figures["fresh_process"] = True  # what report() says of the baseline
    return value


def _run_fresh_process_call(function: str, kwargs_json: str, result: str) -> int:
    """The child side of :func:`in_fresh_process`."""
    _check_fresh_process_function(function)
    value = globals()[function](**json.loads(kwargs_json))
    with open(result, "w") as f:
        json.dump(value, f)
    return 0


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
        "epochs_seconds": sum(epoch_times),
        "launch_seconds": 0.0,
        "end_to_end_seconds": time.perf_counter() - started,
        "holdout_log_loss": _log_loss(probs, yh),
        "holdout_accuracy": float((probs.argmax(1) == yh).mean()),
    }
    started = time.perf_counter()
    model.predict(xt, batch_size=4096, verbose=0)
    predict_rps = len(xt) / (time.perf_counter() - started)

    return baseline, predict_rps


def baseline_fit_from_arrays(arrays: str, epochs: int, batch: int, lr: float):
    """:func:`_baseline_fit` on the arrays of an ``.npz`` (x, y, xh, yh, xt)."""
    data = np.load(arrays)
    return _baseline_fit(data["x"], data["y"], data["xh"], data["yh"], data["xt"],
                         epochs, batch, lr)


def bench_train(args, with_default: bool = True) -> dict:
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
    arrays = os.path.join(tmp, "baseline-arrays.npz")
    np.savez(arrays, x=x, y=y, xh=xh, yh=yh, xt=xt)

    def baseline():  # in a fresh process, alone (see in_fresh_process)
        return in_fresh_process("baseline_fit_from_arrays", arrays=arrays, epochs=epochs,
                                batch=batch, lr=lr)

    results["baseline"], predict_rps = baseline()

    train_df = spark.read.parquet(os.path.join(data, "train")).cache()
    train_df.count()
    holdout = spark.read.parquet(os.path.join(data, "validation"))
    fitted = {}
    for ranks, compression in ((1, "none"), (2, "none"), (2, "fp16")):
        name = f"hvd_otto_{ranks}_ranks" + ("_fp16" if compression == "fp16" else "")
        print(f"hvd-otto: {ranks} rank(s), {epochs} epochs, batch {batch // ranks} per rank, "
              f"gradient compression {compression}")
        started = time.perf_counter()
        # Same global batch size as the baseline: batch // ranks per rank.
        est = HorovodKerasEstimator(numProc=ranks, gradientCompression=compression,
                                    **{**est_args, "batchSize": batch // ranks})
        fitted[name] = est.fit(train_df)
        end_to_end = time.perf_counter() - started
        epochs_seconds = sum(h["seconds"] for h in fitted[name].getHistory())
        figures = evaluate(fitted[name].transform(holdout))
        results[name] = {
            "samples_per_second": len(y) * epochs / epochs_seconds,
            "epochs_seconds": epochs_seconds,
            "launch_seconds": fitted[name].getSummary()["launch_seconds"],
            "phases": fitted[name].getSummary()["phases"],
            "end_to_end_seconds": end_to_end,
            "holdout_log_loss": figures["log_loss"],
            "holdout_accuracy": figures["accuracy"],
        }

    if with_default:  # (``all`` has the defaults in its pipeline runs)
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
    fitted["hvd_otto_2_ranks"].transform(test_df).write.format("noop").mode("overwrite").save()
    transform_rps = len(xt) / (time.perf_counter() - started)
    results["transform"] = {"rows": len(xt), "transform_rows_per_second": transform_rps,
                            "numpy_predict_rows_per_second": predict_rps,
                            "ratio": transform_rps / predict_rps}

    # The baseline again, last: the faster of its two runs is the one every ratio is against.
    again, _ = baseline()
    runs = [results["baseline"]["samples_per_second"], again["samples_per_second"]]
    if again["samples_per_second"] > runs[0]:
        results["baseline"] = again
    results["baseline"]["runs_samples_per_second"] = runs
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


def machine() -> dict:
    """What the figures were measured on: cores, CPU model, memory, library versions."""
    import platform

    import pyspark
    import tensorflow as tf

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    memory = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**30
    return {"cores": os.cpu_count(), "cpu": model, "memory_gib": round(memory, 1),
            "gpus": len(tf.config.list_physical_devices("GPU")), "python": platform.python_version(),
            "tensorflow": tf.__version__, "pyspark": pyspark.__version__,
            "horovod": __import__("horovod").__version__}


def baseline_script(train_zip: str, epochs: int, batch: int, lr: float, holdout: float = 0.2,
                    seed: int = 42) -> dict:
    """The single-process Keras script: CSV → log1p → stratified split → scaling → the same
    MLP with tf.keras → the holdout scored. Timed as a whole, like the pipeline job."""
    import tensorflow as tf

    from hvd_otto.common.keras_model import build_mlp
    from hvd_otto.common.keras_objects import make_optimizer

    started = time.perf_counter()
    _, x, y, names = _read_otto(train_zip)
    is_holdout = _stratified_mask(y, len(names), holdout, seed)
    x = _log_scaled(x, fit_rows=~is_holdout)
    tf.keras.utils.set_random_seed(seed)
    model = build_mlp(x.shape[1], len(names))
    model.compile(make_optimizer("adam", lr), "sparse_categorical_crossentropy", ["accuracy"])
    fit_started = time.perf_counter()
    model.fit(x[~is_holdout], y[~is_holdout], batch_size=batch, epochs=epochs, verbose=0)
    fit_seconds = time.perf_counter() - fit_started
    probs = model.predict(x[is_holdout], batch_size=4096, verbose=0)
    yh = y[is_holdout]
    return {"epochs": epochs, "batch_size": batch, "fit_seconds": fit_seconds,
            "seconds": time.perf_counter() - started,
            "holdout_log_loss": _log_loss(probs, yh),
            "holdout_accuracy": float((probs.argmax(1) == yh).mean())}


def horovod_keras_estimator(spark, train_zip: str, epochs: int, batch: int, lr: float,
                            num_proc: int, store_dir: str, holdout: float = 0.2,
                            seed: int = 42) -> dict:
    """Horovod's own ``horovod.spark.keras.KerasEstimator`` on the same Pipeline stages, MLP,
    epochs and batch: CSV → seed preprocessing → its fit → the holdout scored."""
    import pyarrow.parquet as pq
    import tensorflow as tf
    from horovod.spark.common.store import LocalStore
    from horovod.spark.keras import KerasEstimator
    from pyspark.ml.feature import OneHotEncoder

    class LegacyDatasetStore(LocalStore):
        """Horovod 0.28.1 reads Parquet metadata with the legacy ParquetDataset API
        (``schema.to_arrow_schema()``, ``pieces``), which pyarrow 14 keeps behind a flag."""

        def get_parquet_dataset(self, path):
            return pq.ParquetDataset(self.get_localized_path(path), filesystem=self.fs,
                                     use_legacy_dataset=True)

    class HorovodAdam(tf.keras.optimizers.legacy.Adam):
        """Its ranks load the model with ``hvd.load_model``, which maps a saved "Adam" to the
        new Keras Adam and fails on the legacy config: a distinct name, wrapped explicitly."""

    def distributed_adam(**config):
        import horovod.tensorflow.keras as hvd

        return hvd.DistributedOptimizer(HorovodAdam(**config))

    from hvd_otto import load_csv
    from hvd_otto.common.keras_model import build_mlp
    from hvd_otto.data.csv_source import feature_columns
    from hvd_otto.data.features import build_preprocessing
    from hvd_otto.data.prepare import stratified_split

    started = time.perf_counter()
    rows = load_csv(spark, train_zip)
    fit_rows, holdout_rows = stratified_split(rows, "target", holdout, seed)
    features = feature_columns(rows, "id", "target")
    prep = build_preprocessing(features, "target", "log1p").fit(fit_rows)
    # Its ranks reshape each label to the model's output shape: one-hot labels.
    one_hot = OneHotEncoder(inputCol="label", outputCol="onehot", dropLast=False).fit(
        prep.transform(fit_rows))
    fit_frame = one_hot.transform(prep.transform(fit_rows)).select("features", "onehot")
    model = build_mlp(len(features), 9)
    est = KerasEstimator(num_proc=num_proc, store=LegacyDatasetStore(store_dir), model=model,
                         optimizer=HorovodAdam(lr),  # its ranks scale it by num_proc
                         custom_objects={"HorovodAdam": distributed_adam},
                         loss="categorical_crossentropy", metrics=["accuracy"],
                         feature_cols=["features"], label_cols=["onehot"],
                         batch_size=batch, epochs=epochs, verbose=0, random_seed=seed)
    fit_started = time.perf_counter()
    fitted = est.fit(fit_frame)
    fit_seconds = time.perf_counter() - fit_started
    scored = fitted.transform(prep.transform(holdout_rows).select("features", "label"))
    frame = scored.select("label", "onehot__output").toPandas()
    probs = np.stack([np.asarray(v) for v in frame["onehot__output"]])
    yh = frame["label"].to_numpy().astype(int)
    return {"epochs": epochs, "batch_size_per_rank": batch, "num_proc": num_proc,
            "fit_seconds": fit_seconds, "seconds": time.perf_counter() - started,
            "holdout_log_loss": _log_loss(probs, yh),
            "holdout_accuracy": float((probs.argmax(1) == yh).mean())}


def hvd_otto_pipeline(spark, train_zip: str, out: str, num_proc: int, **params) -> dict:
    """The seed's flow as the pipeline job runs it: CSV → fitted PipelineModel → holdout scored
    (``run_pipeline``: validation, stratified split, preprocessing, Horovod fit, save, score)."""
    from hvd_otto import HorovodKerasEstimator
    from hvd_otto.app.pipeline import run_pipeline

    started = time.perf_counter()
    est = HorovodKerasEstimator(numProc=num_proc, verbose=0, **params)
    result = run_pipeline(spark, train_zip, out, est, holdout=0.2)
    summary = result.summary
    return {"num_proc": num_proc, "params": params, "epochs": summary["epochs"],
            "best_epoch": summary["best_epoch"], "fit_seconds": summary["fit_seconds"],
            "seconds": time.perf_counter() - started, "phases": summary["phases"],
            "fit_phases": summary["fit_phases"],
            "holdout_log_loss": result.figures["log_loss"],
            "holdout_accuracy": result.figures["accuracy"], "model": os.path.join(out, "model")}


def fastest_script_seconds(runs: dict) -> float:
    """The faster of the Keras script's runs (first and last of ``pipeline``): the shared
    machine is noisy, and a slow baseline run would flatter every ratio against it."""
    return min(run["seconds"] for name, run in runs.items() if name.startswith("keras_script"))


def bench_pipeline(args) -> dict:
    """End to end on Otto's train file: the single-process Keras script, the seed's pipeline
    with hvd-otto's defaults at 1 and 2 ranks and at the script's epochs and batch, and
    Horovod's own KerasEstimator; all scored on a stratified 20% holdout."""
    from hvd_otto import HorovodKerasEstimator, get_spark

    train_zip = os.path.join(args.otto, "train.csv.zip")
    lr = HorovodKerasEstimator().getLearningRate()
    epochs, batch = args.epochs, 128
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-pipeline-")
    runs = {}
    print(f"single-process Keras script: {epochs} epochs, batch {batch}", flush=True)
    script = {"train_zip": train_zip, "epochs": epochs, "batch": batch, "lr": lr}
    runs["keras_script"] = in_fresh_process("baseline_script", **script)
    spark = get_spark(args.master)
    for ranks in (1, 2):
        print(f"hvd-otto pipeline job, defaults, {ranks} rank(s)", flush=True)
        runs[f"hvd_otto_defaults_{ranks}_ranks"] = hvd_otto_pipeline(
            spark, train_zip, os.path.join(tmp, f"defaults-{ranks}"), ranks)
    print(f"hvd-otto pipeline job, 2 ranks, {epochs} epochs, global batch {batch}", flush=True)
    runs["hvd_otto_2_ranks_same_epochs"] = hvd_otto_pipeline(
        spark, train_zip, os.path.join(tmp, "same"), 2, epochs=epochs, batchSize=batch // 2,
        validationFraction=0.0, earlyStoppingPatience=0, lrDecayPatience=0, warmupEpochs=0)
    if not args.skip_horovod_estimator:
        print(f"Horovod's KerasEstimator, 2 ranks, {epochs} epochs, global batch {batch}",
              flush=True)
        runs["horovod_keras_estimator"] = horovod_keras_estimator(
            spark, train_zip, epochs, batch // 2, lr, 2, os.path.join(tmp, "horovod-store"))
    print(f"single-process Keras script again: {epochs} epochs, batch {batch}", flush=True)
    runs["keras_script_again"] = in_fresh_process("baseline_script", **script)
    base = fastest_script_seconds(runs)
    print(f"\n{'run':<32}{'fit s':>8}{'total s':>9}{'x script':>10}{'log loss':>10}"
          f"{'accuracy':>10}")
    for name, run in runs.items():
        run["ratio_vs_script"] = run["seconds"] / base
        print(f"{name:<32}{run['fit_seconds']:>8.1f}{run['seconds']:>9.1f}"
              f"{run['ratio_vs_script']:>10.2f}{run['holdout_log_loss']:>10.4f}"
              f"{run['holdout_accuracy']:>10.4f}")
    runs["script_baseline_seconds"] = base
    if "horovod_keras_estimator" in runs:
        ours = runs["hvd_otto_defaults_2_ranks"]["seconds"]
        runs["speedup_vs_horovod_estimator"] = runs["horovod_keras_estimator"]["seconds"] / ours
        print(f"hvd-otto (defaults, 2 ranks) is {runs['speedup_vs_horovod_estimator']:.2f}x "
              "faster than Horovod's KerasEstimator end to end")
    for name in ("hvd_otto_defaults_1_ranks", "hvd_otto_defaults_2_ranks"):
        print(f"{name} phases: {runs[name]['phases']}\n  fit: {runs[name]['fit_phases']}")
    args.pipeline_model = runs["hvd_otto_defaults_2_ranks"]["model"]
    return runs


#: Timed runs of each side of the scoring benchmark; the fastest of each is compared.
SCORING_REPEATS = 3


def bench_scoring(args, model_path: str | None = None) -> dict:
    """``transform`` of Otto's 144k-row test file with a saved PipelineModel (preprocessing
    included, probabilities written to Parquet) vs the same Keras model's ``predict`` on numpy,
    the fastest of :data:`SCORING_REPEATS` runs each (after a first, cold transform)."""
    from pyspark.ml import PipelineModel

    from hvd_otto import get_spark, load_csv
    from hvd_otto.common.keras_model import model_from_bytes

    spark = get_spark(args.master)
    tmp = tempfile.mkdtemp(prefix="hvd-otto-bench-scoring-")
    if model_path is None:
        model_path = hvd_otto_pipeline(spark, os.path.join(args.otto, "train.csv.zip"),
                                       os.path.join(tmp, "fit"), 2, epochs=3)["model"]
    pipeline = PipelineModel.load(model_path)
    test = load_csv(spark, os.path.join(args.otto, "test.csv.zip"), require_label=False).cache()
    rows = test.count()
    prep = PipelineModel(stages=pipeline.stages[:-1])
    frame = prep.transform(test).select("features").toPandas()
    x = np.stack([v.toArray() for v in frame["features"]]).astype(np.float32)
    keras = model_from_bytes(pipeline.stages[-1].getModelBytes())
    keras.predict(x[:4096], batch_size=4096, verbose=0)  # warm, as a serving process is
    predict_seconds = []
    for _ in range(SCORING_REPEATS):
        started = time.perf_counter()
        keras.predict(x, batch_size=4096, verbose=0)
        predict_seconds.append(time.perf_counter() - started)
    numpy_rps = rows / min(predict_seconds)
    timings = []
    for attempt in range(1 + SCORING_REPEATS):  # the first also starts the Python workers
        started = time.perf_counter()
        (pipeline.transform(test).select("id", "probability", "prediction")
         .write.mode("overwrite").parquet(os.path.join(tmp, f"scored-{attempt}")))
        timings.append(time.perf_counter() - started)
    warm = min(timings[1:])
    figures = {"rows": rows, "numpy_predict_rows_per_second": numpy_rps,
               "numpy_predict_seconds": predict_seconds, "transform_seconds": timings,
               "transform_first_rows_per_second": rows / timings[0],
               "transform_rows_per_second": rows / warm,
               "ratio": rows / warm / numpy_rps,
               "ratio_first": rows / timings[0] / numpy_rps}
    test.unpersist()
    print(f"scoring {rows:,} test rows (preprocessing included, Parquet written): "
          f"{figures['transform_rows_per_second']:,.0f} rows/s, fastest of {SCORING_REPEATS} "
          f"(first run {figures['transform_first_rows_per_second']:,.0f}) vs Keras predict on "
          f"numpy {numpy_rps:,.0f} rows/s: {figures['ratio']:.2f}x "
          f"(first {figures['ratio_first']:.2f}x)")
    return figures


def bench_all(args) -> dict:
    """Every benchmark of issue 12 in one run, each against its own baseline."""
    figures = {"machine": machine()}
    print(f"machine: {figures['machine']}", flush=True)
    figures["ingest"] = bench_ingest(args)
    figures["train"] = bench_train(args, with_default=False)
    figures["pipeline"] = bench_pipeline(args)
    figures["scoring"] = bench_scoring(args, args.pipeline_model)
    return figures


def _fresh(run: dict | None) -> bool:
    """Whether a baseline's figures came from :func:`in_fresh_process` (older results: no)."""
    return bool(run and run.get("fresh_process"))


def report(figures: dict) -> str:
    """The README's benchmark tables (Markdown) from the JSON of ``all``."""
    out = []
    m = figures.get("machine")
    if m:
        out.append(f"Measured on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
                   f"{m['gpus']} GPU; TensorFlow {m['tensorflow']}, Spark {m['pyspark']}, "
                   f"Horovod {m['horovod']}.\n")
    p = figures.get("pipeline")
    if p:
        if "script_baseline_seconds" in p:
            alone = ", each in a fresh process" if _fresh(p.get("keras_script")) else ""
            out.append(f"The Keras script runs first and last{alone}; every × is against the "
                       f"faster of its runs ({p['script_baseline_seconds']:.1f} s).\n")
        out += ["| end to end (CSV → holdout scored) | epochs | fit s | total s | × script "
                "| log loss | accuracy |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, run in p.items():
            if isinstance(run, dict):
                out.append(f"| {name} | {run['epochs']} | {run['fit_seconds']:.1f} | "
                           f"{run['seconds']:.1f} | {run['ratio_vs_script']:.2f} | "
                           f"{run['holdout_log_loss']:.4f} | {run['holdout_accuracy']:.4f} |")
        if "speedup_vs_horovod_estimator" in p:
            out.append(f"\nhvd-otto's defaults at 2 ranks are "
                       f"{p['speedup_vs_horovod_estimator']:.2f}× faster than Horovod's "
                       "KerasEstimator end to end.")
        run = p.get("hvd_otto_defaults_2_ranks")
        if run:
            out += ["", "| phase (defaults, 2 ranks) | s |", "| --- | ---: |"]
            out += [f"| {k} | {v:.1f} |" for k, v in run["phases"].items()]
            out += [f"| fit: {k} | {v:.1f} |" for k, v in (run["fit_phases"] or {}).items()]
    t = figures.get("train")
    if t:
        base = t["baseline"]["samples_per_second"]
        if len(t["baseline"].get("runs_samples_per_second", [])) > 1:
            runs = ", ".join(f"{r:,.0f}" for r in t["baseline"]["runs_samples_per_second"])
            alone = ", each in a fresh process" if _fresh(t["baseline"]) else ""
            out += ["", (f"One process runs first and last{alone} ({runs} samples/s); the "
                         "table has the faster.")]
        out += ["", ("| training (same global batch) | samples/s | × one process | launch s | "
                     "epochs s | fit s |"), "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, run in t.items():
            if run.get("samples_per_second"):
                epochs_s = run.get("epochs_seconds")  # absent from older results files
                out.append(f"| {name} | {run['samples_per_second']:,.0f} | "
                           f"{run['samples_per_second'] / base:.2f} | "
                           f"{run['launch_seconds']:.1f} | "
                           f"{'–' if epochs_s is None else f'{epochs_s:.1f}'} | "
                           f"{run['end_to_end_seconds']:.1f} |")
    i = figures.get("ingest")
    if i:
        out += ["", f"| ingest ({i['rows']:,} rows) | s | × pyarrow |", "| --- | ---: | ---: |",
                f"| pyarrow, one process | {i['baseline_pyarrow_seconds']:.1f} | 1.00 |"]
        for key, label in (("cli_prepare_process_seconds", "`hvd-otto prepare`, whole process"),
                           ("spark_prepare_warm_seconds", "`prepare` in a warm session")):
            if key in i:
                out.append(f"| {label} | {i[key]:.1f} | "
                           f"{i[key] / i['baseline_pyarrow_seconds']:.2f} |")
        if "cli_prepare_process_cpu_seconds" in i:
            out.append(f"\nCPU seconds (user+sys): pyarrow {i['baseline_cpu_seconds']:.1f}, "
                       f"whole `prepare` process {i['cli_prepare_process_cpu_seconds']:.1f} "
                       f"({i['ratio_cli_process_cpu_vs_baseline']:.1f}×).")
    sc = figures.get("scoring")
    if sc:
        repeated = "transform_seconds" in sc  # older results files: one run of each side
        fastest = (f", fastest of {len(sc['numpy_predict_seconds'])}" if repeated else "",
                   f", fastest of {len(sc['transform_seconds']) - 1}" if repeated else "")
        out += ["", f"| scoring {sc['rows']:,} test rows | rows/s | × predict |",
                "| --- | ---: | ---: |",
                f"| Keras predict on numpy{fastest[0]} | "
                f"{sc['numpy_predict_rows_per_second']:,.0f} | 1.00 |",
                f"| transform, PipelineModel, Parquet written{fastest[1]} | "
                f"{sc['transform_rows_per_second']:,.0f} | {sc['ratio']:.2f} |"]
        if repeated:
            out.append(f"| the first transform (Python workers start, model loads) | "
                       f"{sc['transform_first_rows_per_second']:,.0f} | "
                       f"{sc['ratio_first']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [FRESH_PROCESS_FLAG]:
        return _run_fresh_process_call(*argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("all", "ingest", "train", "pipeline", "scoring",
                                         "memory", "retry", "report"))
    parser.add_argument("--otto", default=os.environ.get(OTTO_ENV),
                        help=f"folder with Otto's train.csv.zip and test.csv.zip (default: "
                             f"${OTTO_ENV})")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--scale", type=int, default=None,
                        help="ingest: read Otto x SCALE (train rows repeated, ids unique) and "
                             "also time 'hvd-otto prepare' as a whole process (default 1; "
                             "10 for all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (default 20 for train, 6 for retry)")
    parser.add_argument("--rows", default="200000,2000000",
                        help="memory: sizes of the scored test files")
    parser.add_argument("--train-rows", type=int, default=0,
                        help="memory: also train on this many synthetic rows (618780 = Otto×10)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="global batch size (per rank: this / ranks)")
    parser.add_argument("--skip-horovod-estimator", action="store_true",
                        help="pipeline: leave out Horovod's own KerasEstimator (about 150 s)")
    parser.add_argument("--out", default=None, help="append the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.what == "report":
        if not (args.out and os.path.exists(args.out)):
            print("error: report reads the JSON of a run: pass --out results.json",
                  file=sys.stderr)
            return 2
        print(report(json.load(open(args.out))))
        return 0
    if args.what != "memory" and not (
            args.otto and os.path.exists(os.path.join(args.otto, "train.csv.zip"))):
        print(f"error: Otto's train.csv.zip not found in {args.otto or '(no folder given)'}; "
              f"pass --otto DIR or set {OTTO_ENV}", file=sys.stderr)
        return 2
    if args.scale is None:
        args.scale = 10 if args.what == "all" else 1
    if args.epochs is None:
        args.epochs = 6 if args.what == "retry" else 20
    bench = {"all": bench_all, "ingest": bench_ingest, "train": bench_train,
             "pipeline": bench_pipeline, "scoring": bench_scoring, "memory": bench_memory,
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
        if args.what == "all":
            existing.update(figures)
        else:
            existing[args.what] = figures
        with open(args.out, "w") as f:
            json.dump(existing, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
