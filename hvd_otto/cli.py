"""The ``hvd-otto`` command line: thin argument parsing over the library."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

from .estimator import TrainingError
from .schema import InputError

log = logging.getLogger("hvd_otto")


DISCOVERY_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "jobs", "gpu_discovery.sh")


def _add_spark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master", default=None,
                   help="Spark master when not run by spark-submit (default local[*])")
    p.add_argument("--executor-gpus", type=int, default=0,
                   help="GPUs per executor; each rank and scoring task then holds one "
                        "(sets spark.executor/task.resource.gpu.amount; default 0: CPU)")
    p.add_argument("--gpu-discovery-script", default=None,
                   help="Spark GPU discovery script on the executors' hosts (default: "
                        "jobs/gpu_discovery.sh of this checkout when it exists)")


def spark_from_args(args: argparse.Namespace):
    """The SparkSession of a command, with the GPU settings its options ask for."""
    from .devices import spark_gpu_conf
    from .spark import get_spark

    gpus = getattr(args, "executor_gpus", 0)
    script = getattr(args, "gpu_discovery_script", None) or (
        DISCOVERY_SCRIPT if os.path.exists(DISCOVERY_SCRIPT) else None)
    try:
        conf = spark_gpu_conf(gpus, script)
    except ValueError as err:
        raise InputError(f"--executor-gpus: {err}") from None
    return get_spark(getattr(args, "master", None), conf=conf)


def _add_prepare_args(p: argparse.ArgumentParser) -> None:
    from .ingest import BAD_ROW_POLICIES, DEFAULT_ROW_GROUPS
    from .features import TRANSFORMS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", help="training CSV (.csv, .csv.gz, local .zip; path or URL)")
    src.add_argument("--synthetic", action="store_true",
                     help="use the embedded Otto-shaped synthetic data instead of a file")
    p.add_argument("--rows", type=int, default=None,
                   help="rows of synthetic data (default 61,878, Otto's size)")
    p.add_argument("--test", help="optional unlabelled CSV to transform with the same model")
    p.add_argument("--out", required=True, help="output folder (path, file://, hdfs://, s3a://)")
    p.add_argument("--id-col", default="id", help="id column (default id; not a feature)")
    p.add_argument("--label-col", default="target", help="label column (default target)")
    p.add_argument("--bad-rows", choices=BAD_ROW_POLICIES, default="fail",
                   help="fail (default) stops at bad rows; quarantine writes them to rejected/")
    p.add_argument("--validation", type=float, default=0.2,
                   help="stratified validation fraction (default 0.2)")
    p.add_argument("--transform", choices=TRANSFORMS, default="log1p",
                   help="count transform before scaling (default log1p)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and synthetic data")
    p.add_argument("--row-groups", type=int, default=DEFAULT_ROW_GROUPS,
                   help=f"Parquet row groups per split (default {DEFAULT_ROW_GROUPS}:"
                        " balanced shards for 1, 2, 3, 4, 6, 8, 12 or 24 ranks)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run_prepare(args: argparse.Namespace) -> dict:
    """Run ``prepare`` from parsed arguments and print its summary; returns the metadata."""
    from .ingest import prepare
    from . import synthetic

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


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-proc", type=int, default=2, help="Horovod ranks (default 2)")
    p.add_argument("--epochs", type=int, default=40,
                   help="maximum epochs (default 40; early stopping usually ends sooner)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size per rank (default 128)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="learning rate of one rank, scaled by --num-proc (default 0.001)")
    p.add_argument("--optimizer", default="adam", help="adam (default), sgd, adadelta, rmsprop")
    p.add_argument("--gpus", choices=("auto", "true", "false"), default="auto",
                   help="use GPUs: auto (default) uses them when TensorFlow sees one")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train in mixed_float16 (only worth it on GPUs with tensor cores)")
    p.add_argument("--store", default=None,
                   help="folder for run data, checkpoints and history (default: a temporary "
                        "folder, removed after training)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run in --store from its last epoch "
                        "checkpoint (after a killed driver or a failed run)")
    p.add_argument("--max-retries", type=int, default=1,
                   help="retries of a failed Horovod run, each from the last checkpoint "
                        "(default 1)")


def make_estimator(args: argparse.Namespace):
    """A HorovodKerasEstimator from the training options of the command line."""
    from .estimator import HorovodKerasEstimator

    est = HorovodKerasEstimator(numProc=args.num_proc, epochs=args.epochs,
                                batchSize=args.batch_size, optimizer=args.optimizer,
                                useGpu=args.gpus, mixedPrecision=args.mixed_precision)
    if args.resume and not args.store:
        raise InputError("--resume needs --store: the store folder of the run to continue.")
    est.setMaxRetries(args.max_retries).setResume(args.resume)
    if args.store:
        est.setStorePath(args.store)
    if args.learning_rate:
        est.setLearningRate(args.learning_rate)
    return est


def run_train(args: argparse.Namespace):
    """Train on a prepared folder (or a raw CSV) and save the whole PipelineModel atomically.

    The saved model holds the fitted preprocessing followed by the Keras model, so it scores
    raw CSV columns ('evaluate --test', 'predict').
    """
    from pyspark.ml import PipelineModel

    from . import store
    from .ingest import feature_columns, load_csv, read_prepared_metadata
    from .pipeline import build_pipeline, save_model

    spark = spark_from_args(args)
    fs = store.HadoopFs(spark)
    model_url = store.to_url(args.model)
    store.check_output(fs, model_url, args.overwrite)
    est = make_estimator(args)
    if args.data:
        data = store.to_url(args.data)
        read_prepared_metadata(fs, args.data)
        print(f"training on {args.num_proc} ranks: {args.data}/train")
        keras = est.fit(spark.read.parquet(store.join(data, "train")))
        preprocessing = PipelineModel.load(store.join(data, "preprocessing"))
        model = PipelineModel(stages=[*preprocessing.stages, keras])
    else:
        frame = load_csv(spark, args.train, args.id_col, args.label_col)
        features = feature_columns(frame, args.id_col, args.label_col)
        print(f"training on {args.num_proc} ranks: {args.train} (preprocessing fitted on it)")
        model = build_pipeline(features, args.label_col, args.transform, est).fit(frame)
        keras = model.stages[-1]
    with store.atomic_dir(fs, model_url, args.overwrite) as staging:
        save_model(fs, model, staging)
    summary = keras.getSummary()
    print(f"trained {len(keras.getHistory())} epochs (best {summary['best_epoch']}) in "
          f"{summary['fit_seconds']:.1f} s; model saved to {model_url}")
    return model


def run_evaluate(args: argparse.Namespace) -> dict:
    """Score a labelled CSV (or a prepared split) with a saved model; print and save figures."""
    from . import store
    from .evaluate import evaluate, format_report
    from .ingest import read_prepared_metadata
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
        figures = evaluate(scored.cache(), model.labels)
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
    from . import store
    from .scoring import load_model, read_csv_for_model, write_submission

    spark = spark_from_args(args)
    fs = store.HadoopFs(spark)
    out_url = store.to_url(args.out)
    store.check_output(fs, out_url, args.overwrite)
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
    print(f"pipeline: {args.train} → {args.out} ({args.num_proc} ranks)")
    result = pipeline(spark, args.train, args.out, make_estimator(args), test=args.test,
                      id_col=args.id_col, label_col=args.label_col, bad_rows=args.bad_rows,
                      holdout=args.holdout, transform=args.transform, seed=args.seed,
                      overwrite=args.overwrite, job=getattr(args, "job", "pipeline"))
    summary = result.summary
    print(f"trained {summary['epochs']} epochs (best {summary['best_epoch']}) on "
          f"{summary['num_proc']} ranks in {summary['fit_seconds']:.1f} s")
    if result.figures:
        print(f"holdout ({args.holdout:.0%} of {args.train}):")
        print(format_report(result.figures))
    rejected = sum(summary["rows"]["rejected"].values())
    if rejected:
        print(f"{rejected:,} bad row(s) quarantined in {result.out}/rejected/")
    if args.test:
        print(f"submission: {result.out}/submission.csv ({summary['submission_rows']:,} rows)")
    print(f"model: {result.out}/model   figures: {result.out}/metrics.json and PNGs")
    return result


def run_demo(args: argparse.Namespace):
    """The README's main command: the pipeline job on embedded synthetic data (2 ranks)."""
    from . import store, synthetic
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
        test.to_csv(os.path.join(tmp, "test.csv"), index=False)
        run_pipeline(argparse.Namespace(
            train=train, test=os.path.join(tmp, "test.csv"), out=out, id_col="id",
            label_col="target", bad_rows="fail", holdout=0.2, transform="log1p",
            seed=args.seed, overwrite=overwrite, master=args.master, num_proc=args.num_proc,
            epochs=args.epochs, batch_size=128, learning_rate=None, optimizer="adam",
            gpus="auto", mixed_precision=False, store=None, resume=False, max_retries=1,
            job="demo",
            executor_gpus=args.executor_gpus, gpu_discovery_script=args.gpu_discovery_script))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"demo finished in {time.perf_counter() - started:.1f} s; results in {out}")


def run_tests(args: argparse.Namespace) -> int:
    """Run the project's test suite (a source checkout or the Docker image)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tests = os.path.join(root, "tests")
    if not os.path.isdir(tests):
        raise InputError(f"no tests/ folder beside the package ({root}); 'hvd-otto test' runs "
                         "from a source checkout or the Docker image.")
    import pytest

    os.chdir(root)
    return pytest.main([tests, *args.pytest_args])


def _add_csv_role_args(p: argparse.ArgumentParser, label: bool = True) -> None:
    p.add_argument("--id-col", default="id", help="id column (default id; not a feature)")
    if label:
        p.add_argument("--label-col", default="target", help="label column (default target)")


def build_parser() -> argparse.ArgumentParser:
    from .features import TRANSFORMS
    from .ingest import BAD_ROW_POLICIES

    parser = argparse.ArgumentParser(
        prog="hvd-otto",
        description="Horovod-on-Spark training pipeline for Otto-shaped data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="validate a CSV and write preprocessed Parquet",
                       description="CSV → validated, preprocessed, split Parquet for Petastorm.")
    _add_prepare_args(p)
    _add_spark_args(p)
    p.set_defaults(func=run_prepare)

    p = sub.add_parser("train", help="train with Horovod ranks and save the model",
                       description="Prepared Parquet (or a CSV) → a PipelineModel (preprocessing "
                                   "+ Keras model) trained by N Horovod ranks.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder written by 'hvd-otto prepare'")
    src.add_argument("--train", help="labelled CSV; the preprocessing is fitted on it")
    p.add_argument("--model", required=True, help="where to save the trained model")
    _add_csv_role_args(p)
    p.add_argument("--transform", choices=TRANSFORMS, default="log1p",
                   help="count transform with --train (default log1p)")
    _add_train_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    _add_spark_args(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="log loss, accuracy, per-class figures and plots",
                       description="Score labelled data with a saved model: log loss, accuracy, "
                                   "per-class precision/recall, confusion matrix.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--test", help="labelled CSV (same columns as the training file)")
    src.add_argument("--data", help="folder written by 'hvd-otto prepare' (with --split)")
    p.add_argument("--split", default="validation", help="split of --data (default validation)")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--out", default=None, help="folder for metrics.json, confusion_matrix.png "
                   "and learning_curve.png")
    _add_csv_role_args(p, label=False)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_spark_args(p)
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("predict", help="a Kaggle submission CSV from an unlabelled CSV",
                       description="Unlabelled CSV + saved model → id,Class_1,… probabilities.")
    p.add_argument("--test", required=True, help="unlabelled CSV (Kaggle's test.csv)")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--out", required=True, help="submission CSV to write (path or URL)")
    _add_csv_role_args(p, label=False)
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_spark_args(p)
    p.set_defaults(func=run_predict)

    p = sub.add_parser("pipeline", help="the whole flow: fit, evaluate, save, predict",
                       description="CSV → fit the Pipeline (StringIndexer → VectorAssembler → "
                                   "count transform → StandardScaler → Horovod Keras) → "
                                   "evaluate on a stratified holdout → save the PipelineModel → "
                                   "predict --test if given. OUT is committed atomically.")
    p.add_argument("--train", required=True, help="labelled CSV (.csv, .csv.gz, local .zip)")
    p.add_argument("--test", default=None, help="unlabelled CSV to predict into submission.csv")
    p.add_argument("--out", required=True, help="output folder (path, file://, hdfs://)")
    _add_csv_role_args(p)
    p.add_argument("--bad-rows", choices=BAD_ROW_POLICIES, default="fail",
                   help="fail (default) stops at bad rows; quarantine writes them to "
                        "OUT/rejected/ and goes on")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="stratified holdout fraction for the evaluation (default 0.2; 0: none)")
    p.add_argument("--transform", choices=TRANSFORMS, default="log1p",
                   help="count transform before scaling (default log1p)")
    p.add_argument("--seed", type=int, default=42, help="seed of the holdout split")
    _add_train_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_spark_args(p)
    p.set_defaults(func=run_pipeline)

    p = sub.add_parser("demo", help="run the pipeline job on embedded synthetic data",
                       description="The pipeline job on embedded Otto-shaped synthetic data: "
                                   "2 ranks, holdout figures, a saved model, a submission.")
    p.add_argument("--out", default=None, help="output folder (default ./hvd-otto-demo; an "
                   "earlier demo's output there is replaced)")
    p.add_argument("--rows", type=int, default=None, help="synthetic rows (default 61,878)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-proc", type=int, default=2, help="Horovod ranks (default 2)")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40)")
    p.add_argument("--overwrite", action="store_true", help="replace any existing --out")
    _add_spark_args(p)
    p.set_defaults(func=run_demo)

    p = sub.add_parser("test", help="run the test suite (source checkout or Docker image)",
                       description="Run the project's pytest suite; extra arguments go to "
                                   "pytest.")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")
    p.set_defaults(func=run_tests)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hvd-otto`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        status = args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
