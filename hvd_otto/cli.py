"""The ``hvd-otto`` command line: thin argument parsing over the library."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

from .schema import InputError

log = logging.getLogger("hvd_otto")


def _add_spark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master", default=None,
                   help="Spark master when not run by spark-submit (default local[*])")


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
    from .spark import get_spark
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
        spark = get_spark(args.master)
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
    p.add_argument("--store", default=None, help="folder for run data and checkpoints")


def run_train(args: argparse.Namespace):
    """Train on a prepared folder's train split and save the model atomically."""
    from . import store
    from .estimator import HorovodKerasEstimator
    from .ingest import read_prepared_metadata
    from .spark import get_spark

    spark = get_spark(args.master)
    fs = store.HadoopFs(spark)
    data = store.to_url(args.data)
    read_prepared_metadata(fs, args.data)
    model_url = store.to_url(args.model)
    store.check_output(fs, model_url, args.overwrite)
    est = HorovodKerasEstimator(numProc=args.num_proc, epochs=args.epochs,
                                batchSize=args.batch_size, optimizer=args.optimizer,
                                useGpu=args.gpus, storePath=args.store)
    if args.learning_rate:
        est.setLearningRate(args.learning_rate)
    print(f"training on {args.num_proc} ranks: {args.data}/train")
    model = est.fit(spark.read.parquet(store.join(data, "train")))
    with store.atomic_dir(fs, model_url, args.overwrite) as staging:
        model.write().save(staging)
    summary = model.getSummary()
    print(f"trained {len(model.getHistory())} epochs (best {summary['best_epoch']}) in "
          f"{summary['fit_seconds']:.1f} s; model saved to {model_url}")
    return model


def run_evaluate(args: argparse.Namespace) -> dict:
    """Score a prepared split with a saved model and print/save the figures."""
    import json

    from . import store
    from .estimator import HorovodKerasModel
    from .evaluate import evaluate, format_report, save_plots
    from .ingest import read_prepared_metadata
    from .spark import get_spark

    spark = get_spark(args.master)
    fs = store.HadoopFs(spark)
    data = store.to_url(args.data)
    meta = read_prepared_metadata(fs, args.data)
    model = HorovodKerasModel.load(args.model)
    scored = model.transform(spark.read.parquet(store.join(data, args.split))).cache()
    figures = evaluate(scored, meta["labels"])
    scored.unpersist()
    print(f"{args.split} split of {args.data}:")
    print(format_report(figures))
    if args.out:
        fs.write_text(store.to_url(args.out), json.dumps(figures, indent=2))
        print(f"figures written to {args.out}")
        folder = store.local_path(store.to_url(args.out))
        if folder:
            for path in save_plots(figures, model.getHistory(), os.path.dirname(folder)):
                print(f"plot written to {path}")
    return figures


def run_predict(args: argparse.Namespace) -> str:
    """Score an unlabelled CSV into a Kaggle submission (``id,Class_1,…``), written atomically."""

    import numpy as np
    import pandas as pd
    from pyspark.ml import PipelineModel

    from . import store
    from .estimator import HorovodKerasModel
    from .features import apply_preprocessing
    from .ingest import check_feature_columns, load_csv, read_prepared_metadata
    from .spark import get_spark

    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it.")
    spark = get_spark(args.master)
    fs = store.HadoopFs(spark)
    data = store.to_url(args.data)
    meta = read_prepared_metadata(fs, args.data)
    model = HorovodKerasModel.load(args.model)
    frame = load_csv(spark, args.test, meta["id_col"], meta["label_col"], require_label=False)
    features = [c for c in frame.columns if c not in ("_line", meta["id_col"], meta["label_col"])]
    check_feature_columns(args.test, features, meta["feature_cols"])
    preprocessing = PipelineModel.load(store.join(data, "preprocessing"))
    scored = model.transform(apply_preprocessing(preprocessing, frame))
    result = scored.select("_line", meta["id_col"], "probability").toPandas()
    result = result.sort_values("_line")
    probs = np.stack(result["probability"].map(lambda v: v.toArray()))
    submission = pd.DataFrame(probs, columns=meta["labels"])
    submission.insert(0, meta["id_col"], result[meta["id_col"]].to_numpy())
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        submission.to_csv(tmp, index=False, float_format="%.6f")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {len(submission):,} rows × {len(meta['labels'])} class probabilities to {out}")
    return out


def run_demo(args: argparse.Namespace) -> None:
    """The README's main command: prepare, train (2 ranks), evaluate, save on synthetic data."""
    started = time.perf_counter()
    out = os.path.abspath(args.out or os.path.join(os.getcwd(), "hvd-otto-demo"))
    data, model = os.path.join(out, "data"), os.path.join(out, "model")
    run_prepare(argparse.Namespace(
        train=None, synthetic=True, rows=args.rows, test=None, out=data, id_col="id",
        label_col="target", bad_rows="fail", validation=0.2, transform="log1p", seed=args.seed,
        row_groups=24, overwrite=True, master=args.master))
    run_train(argparse.Namespace(
        data=data, model=model, num_proc=args.num_proc, epochs=args.epochs, batch_size=128,
        learning_rate=None, optimizer="adam", gpus="auto", store=os.path.join(out, "store"),
        overwrite=True, master=args.master))
    run_evaluate(argparse.Namespace(data=data, model=model, split="validation",
                                    out=os.path.join(out, "metrics.json"), master=args.master))
    print(f"demo finished in {time.perf_counter() - started:.1f} s; results in {out}")


def build_parser() -> argparse.ArgumentParser:
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

    p = sub.add_parser("train", help="train on prepared Parquet with Horovod ranks",
                       description="Prepared Parquet → a model trained by N Horovod ranks.")
    p.add_argument("--data", required=True, help="folder written by 'hvd-otto prepare'")
    p.add_argument("--model", required=True, help="where to save the trained model")
    _add_train_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    _add_spark_args(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser("evaluate", help="log loss, accuracy and per-class figures",
                       description="Score a prepared split with a saved model.")
    p.add_argument("--data", required=True, help="folder written by 'hvd-otto prepare'")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--split", default="validation", help="split to score (default validation)")
    p.add_argument("--out", default=None, help="write the figures as JSON here (and, for a "
                   "local path, confusion_matrix.png and learning_curve.png beside it)")
    _add_spark_args(p)
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("predict", help="a Kaggle submission CSV from an unlabelled CSV",
                       description="Unlabelled CSV + saved model → id,Class_1,… probabilities.")
    p.add_argument("--test", required=True, help="unlabelled CSV (Kaggle's test.csv)")
    p.add_argument("--data", required=True,
                   help="the prepared folder whose preprocessing the model was trained on")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--out", required=True, help="submission CSV to write (local path)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _add_spark_args(p)
    p.set_defaults(func=run_predict)

    p = sub.add_parser("demo", help="run the whole job on the embedded synthetic data",
                       description="The whole job on the embedded Otto-shaped synthetic data.")
    p.add_argument("--out", default=None, help="output folder (default ./hvd-otto-demo)")
    p.add_argument("--rows", type=int, default=None, help="synthetic rows (default 61,878)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-proc", type=int, default=2, help="Horovod ranks (default 2)")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs (default 40)")
    _add_spark_args(p)
    p.set_defaults(func=run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hvd-otto`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
