"""What each ``hvd-otto`` command does, from its parsed arguments (``cli`` parses them)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from ..common.errors import InputError


def spark_from_args(args: argparse.Namespace):
    """The SparkSession of a command, with the GPU settings its options ask for."""
    from .session import get_spark

    return get_spark(getattr(args, "master", None),
                     executor_gpus=getattr(args, "executor_gpus", 0),
                     gpu_discovery_script=getattr(args, "gpu_discovery_script", None))


def run_prepare(args: argparse.Namespace) -> dict:
    """Run ``prepare`` from parsed arguments and print its summary; returns the metadata."""
    from ..data import synthetic
    from ..data.prepare import prepare

    tmp = None
    train = args.train
    try:
        if args.synthetic:
            tmp = tempfile.mkdtemp(prefix="hvd-otto-synthetic-")
            rows = args.rows or synthetic.OTTO_ROWS
            print(f"generating {rows:,} rows of Otto-shaped synthetic data (seed {args.seed})")
            train = synthetic.write_csv(os.path.join(tmp, "synthetic_train.csv"), rows, args.seed)
        elif args.rows:
            raise InputError("--rows only applies with --synthetic.")
        spark = spark_from_args(args)
        print(f"preparing {train} → {args.out}")
        result = prepare(
            spark, train, args.out, test=args.test, id_col=args.id_col,
            label_col=args.label_col, bad_rows=args.bad_rows, validation=args.validation,
            transform=args.transform, seed=args.seed, row_groups=args.row_groups,
            overwrite=args.overwrite,
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print_prepare_summary(result)
    return result.metadata


def print_prepare_summary(result) -> None:
    meta = result.metadata
    splits = meta["splits"]
    rejected = sum(meta["rejected_rows"].values())
    print(f"prepared {meta['input_rows']:,} input rows in {result.seconds:.1f} s")
    for name, info in splits.items():
        print(f"  {name:<11}{info['rows']:>10,} rows")
    print(f"  {'rejected':<11}{rejected:>10,} rows"
          + (f" (see {result.out}/rejected/)" if rejected else ""))
    totals: dict[str, int] = {}
    for name in ("train", "validation"):
        for label, count in splits[name]["class_counts"].items():
            totals[label] = totals.get(label, 0) + count
    print("  classes:   " + ", ".join(f"{k} {v:,}" for k, v in totals.items()))
    print(f"  features:  {len(meta['feature_cols'])} ({meta['transform']} + standard scaling)")
    print(f"  output:    {result.out}")


def make_estimator(args: argparse.Namespace):
    """A HorovodKerasEstimator from the training options of the command line."""
    from ..driver.estimator import HorovodKerasEstimator

    est = HorovodKerasEstimator(numProc=args.num_proc, epochs=args.epochs,
                                batchSize=args.batch_size, learningRate=args.learning_rate,
                                optimizer=args.optimizer, useGpu=args.gpus,
                                mixedPrecision=args.mixed_precision,
                                gradientCompression=args.gradient_compression,
                                backwardPassesPerStep=args.backward_passes_per_step,
                                allreduceGroups=args.allreduce_groups)
    if args.resume and not args.store:
        raise InputError("--resume needs --store: the store folder of the run to continue.")
    est.setMaxRetries(args.max_retries).setResume(args.resume)
    if args.store:
        est.setStorePath(args.store)
    return est


def run_train(args: argparse.Namespace):
    """Train on a prepared folder (or a raw CSV) and save the whole PipelineModel atomically.

    The saved model holds the fitted preprocessing followed by the Keras model, so it scores
    raw CSV columns ('evaluate --test', 'predict').
    """
    from pyspark.ml import PipelineModel

    from ..common import fs as store
    from ..data.csv_source import feature_columns, load_csv
    from ..data.prepare import read_prepared_metadata
    from .pipeline import build_pipeline, save_model

    spark = spark_from_args(args)
    fs = store.HadoopFs(spark)
    model_url = store.to_url(args.model)
    store.check_output(fs, model_url, args.overwrite)
    est = make_estimator(args)
    if args.data:
        data = store.to_url(args.data)
        meta = read_prepared_metadata(fs, args.data)
        frame = spark.read.parquet(store.join(data, "train"))
        if meta["splits"]["validation"]["rows"]:
            print(f"training on {args.data}/train, validating on {args.data}/validation")
            frame = with_validation_rows(frame, spark.read.parquet(
                store.join(data, "validation")), est)
        else:
            print(f"training on {args.data}/train (it has no validation split: "
                  f"{est.getValidationFraction():.0%} of it is held out for validation)")
        keras = est.fit(frame)
        preprocessing = PipelineModel.load(store.join(data, "preprocessing"))
        model = PipelineModel(stages=[*preprocessing.stages, keras])
    else:
        frame = load_csv(spark, args.train, args.id_col, args.label_col)
        features = feature_columns(frame, args.id_col, args.label_col)
        print(f"training on {args.train} (preprocessing fitted on it)")
        model = build_pipeline(features, args.label_col, args.transform, est).fit(frame)
        keras = model.stages[-1]
    with store.atomic_dir(fs, model_url, args.overwrite) as staging:
        save_model(fs, model, staging)
    summary = keras.getSummary()
    print(f"trained {plural(len(keras.getHistory()), 'epoch')} (best {summary['best_epoch']}) "
          f"in {summary['fit_seconds']:.1f} s; model saved to {model_url}")
    return model


def with_validation_rows(train, validation, est):
    """One frame of a prepared folder's train and validation splits, marked by a column that
    the Estimator's ``validationCol`` names."""
    from pyspark.sql import functions as F

    column = "_is_validation"
    est.setValidationCol(column)
    return (train.withColumn(column, F.lit(False))
            .unionByName(validation.withColumn(column, F.lit(True))))


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def run_evaluate(args: argparse.Namespace) -> dict:
    """Score a labelled CSV (or a prepared split) with a saved model; print and save figures."""
    from ..common import fs as store
    from ..data.prepare import read_prepared_metadata
    from .evaluate import evaluate, format_report
    from .scoring import evaluate_frame, load_model, read_csv_for_model, write_evaluation

    spark = spark_from_args(args)
    fs = store.HadoopFs(spark)
    out_url = store.to_url(args.out) if args.out else None
    if out_url:
        store.check_output(fs, out_url, args.overwrite)
    model = load_model(spark, args.model)
    if args.test:
        frame = read_csv_for_model(spark, model, args.test, args.id_col, require_label=True)
        figures = evaluate_frame(model, frame)
        source = args.test
    else:
        data = store.to_url(args.data)
        meta = read_prepared_metadata(fs, args.data)
        if meta["feature_cols"] != model.feature_cols:
            raise InputError(f"{args.data} was prepared with other feature columns than the "
                             f"model {args.model} was trained on; score a CSV with --test.")
        scored = model.keras_stage.transform(spark.read.parquet(store.join(data, args.split)))
        figures = evaluate(scored, model.labels)
        source = f"the {args.split} split of {args.data}"
    print(f"{source}:")
    print(format_report(figures))
    if out_url:
        with store.atomic_dir(fs, out_url, args.overwrite) as staging:
            written = write_evaluation(fs, staging, figures, model.keras_stage.getHistory())
        for path in written:
            print(f"wrote {out_url}/{path.rsplit('/', 1)[1]}")
    return figures


def run_predict(args: argparse.Namespace) -> str:
    """Score an unlabelled CSV into a Kaggle submission (``id,Class_1,…``), written atomically."""
    from ..common import fs as store
    from .scoring import load_model, read_csv_for_model, write_submission

    spark = spark_from_args(args)
    fs = store.HadoopFs(spark)
    out_url = store.to_url(args.out)
    store.check_output(fs, out_url, args.overwrite, folder=False)
    model = load_model(spark, args.model)
    frame = read_csv_for_model(spark, model, args.test, args.id_col, require_label=False)
    write_submission(fs, model, frame, out_url, args.id_col, args.overwrite)
    print(f"wrote {frame.count():,} rows × {len(model.labels)} class probabilities to {out_url}")
    return out_url


def run_pipeline(args: argparse.Namespace):
    """The seed's flow in one job: CSV → fit → holdout evaluation → saved model → submission."""
    from .evaluate import format_report
    from .pipeline import run_pipeline as pipeline

    spark = spark_from_args(args)
    print(f"pipeline: {args.train} → {args.out}")
    result = pipeline(spark, args.train, args.out, make_estimator(args), test=args.test,
                      id_col=args.id_col, label_col=args.label_col, bad_rows=args.bad_rows,
                      holdout=args.holdout, transform=args.transform, seed=args.seed,
                      overwrite=args.overwrite, job=getattr(args, "job", "pipeline"),
                      mlflow=getattr(args, "mlflow", None),
                      experiment=getattr(args, "experiment", None))
    summary = result.summary
    print(f"trained {plural(summary['epochs'], 'epoch')} (best {summary['best_epoch']}) on "
          f"{plural(summary['num_proc'], 'rank')} in {summary['fit_seconds']:.1f} s")
    if result.figures:
        print(f"holdout ({args.holdout:.0%} of {args.train}):")
        print(format_report(result.figures))
    rejected = sum(summary["rows"]["rejected"].values())
    if rejected:
        print(f"{rejected:,} bad row(s) quarantined in {result.out}/rejected/")
    if args.test:
        print(f"submission: {result.out}/submission.csv ({summary['submission_rows']:,} rows)")
    print(f"model: {result.out}/model   figures: {result.out}/metrics.json and PNGs")
    if summary.get("mlflow_run_id"):
        print(f"MLflow run {summary['mlflow_run_id']} in {summary['mlflow_tracking_uri']}")
    elif summary.get("mlflow_error"):
        print(f"MLflow run NOT recorded in {summary['mlflow_tracking_uri']}: "
              f"{summary['mlflow_error']}")
    return result


def run_demo(args: argparse.Namespace):
    """The README's main command: the pipeline job on embedded synthetic data (2 ranks)."""
    from ..common import fs as store
    from ..data import synthetic
    from .pipeline import previous_job

    started = time.perf_counter()
    out = os.path.abspath(args.out or os.path.join(os.getcwd(), "hvd-otto-demo"))
    overwrite = args.overwrite
    if os.path.exists(out) and not overwrite:
        # A previous demo's output is replaced; anything else is left alone.
        if previous_job(store.HadoopFs(spark_from_args(args)), store.to_url(out)) != "demo":
            raise InputError(f"{out} exists and is not the output of an earlier demo; pass "
                             "--overwrite to replace it, or --out to write elsewhere.")
        overwrite = True
    tmp = tempfile.mkdtemp(prefix="hvd-otto-demo-")
    try:
        rows = args.rows or synthetic.OTTO_ROWS
        print(f"generating {rows:,} training rows and {rows // 10:,} test rows of Otto-shaped "
              f"synthetic data (seed {args.seed}) in {tmp}")
        train = synthetic.write_csv(os.path.join(tmp, "train.csv"), rows, args.seed)
        test = synthetic.generate(rows // 10, args.seed + 1).drop(columns=["target"])
        test_path = os.path.join(tmp, "test.csv")
        test.to_csv(test_path, index=False)
        run_pipeline(demo_pipeline_args(args, train, test_path, out, overwrite))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"demo finished in {time.perf_counter() - started:.1f} s; results in {out}")


def demo_pipeline_args(args: argparse.Namespace, train: str, test: str, out: str,
                       overwrite: bool) -> argparse.Namespace:
    """The ``pipeline`` command's arguments for the demo, parsed by its own parser so every
    pipeline option (and its default) is there."""
    from .cli import build_parser

    argv = ["pipeline", "--train", train, "--test", test, "--out", out,
            "--seed", str(args.seed), "--num-proc", str(args.num_proc),
            "--epochs", str(args.epochs), "--executor-gpus", str(args.executor_gpus)]
    argv += ["--overwrite"] if overwrite else []
    argv += ["--master", args.master] if args.master else []
    if args.gpu_discovery_script:
        argv += ["--gpu-discovery-script", args.gpu_discovery_script]
    parsed = build_parser().parse_args(argv)
    parsed.job = "demo"
    return parsed


def run_tests(args: argparse.Namespace) -> int:
    """Run the project's test suite (a source checkout or the Docker image)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tests = os.path.join(root, "tests")
    if not os.path.isdir(tests):
        raise InputError(f"no tests/ folder beside the package ({root}); 'hvd-otto test' runs "
                         "from a source checkout or the Docker image.")
    import pytest

    os.chdir(root)
    return pytest.main([tests, *args.pytest_args])
