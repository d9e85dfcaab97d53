"""The ``hvd-otto`` command line: argument parsing; ``commands`` does the work."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from ..common.defaults import COMPRESSIONS, USE_GPU_CHOICES, default
from ..common.errors import InputError, Interrupted, TrainingError
from ..common.signals import StopSignals
from . import commands
from .session import cancel_spark_jobs, stop_spark

log = logging.getLogger("hvd_otto")


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the error names the option)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def _fraction(text: str) -> float:
    """An argparse type: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


POSITIVE, NON_NEGATIVE = _at_least(1), _at_least(0)
#: The labelled splits of a prepared folder (``test`` has no labels to evaluate against).
EVALUATE_SPLITS = ("train", "validation")


def _add_spark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--master", default=None,
                   help="Spark master when not run by spark-submit (default local[*])")
    p.add_argument("--executor-gpus", type=NON_NEGATIVE, default=0,
                   help="GPUs per executor (spark.executor.resource.gpu.amount); each Horovod "
                        "rank's task then holds one, ETL tasks none (default 0: CPU)")
    p.add_argument("--gpu-discovery-script", default=None,
                   help="GPU discovery script on the executors' hosts (default: the package's "
                        "gpu_discovery.sh, shipped with spark.files on YARN; standalone Workers "
                        "discover GPUs themselves)")


def _add_csv_role_args(p: argparse.ArgumentParser, label: bool = True) -> None:
    p.add_argument("--id-col", default="id", help="id column (default id; not a feature)")
    if label:
        p.add_argument("--label-col", default="target", help="label column (default target)")


def _add_bad_rows_arg(p: argparse.ArgumentParser, where: str) -> None:
    from ..data.csv_source import BAD_ROW_POLICIES

    p.add_argument("--bad-rows", choices=BAD_ROW_POLICIES, default="fail",
                   help=f"fail (default) stops at bad rows; quarantine writes them to {where} "
                        "and goes on")


def _add_transform_arg(p: argparse.ArgumentParser, when: str = "before scaling") -> None:
    from ..data.features import TRANSFORMS

    p.add_argument("--transform", choices=TRANSFORMS, default="log1p",
                   help=f"count transform {when} (default log1p)")


def _add_overwrite_arg(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """Training options; every default is the Estimator's (``common.defaults``)."""
    p.add_argument("--num-proc", type=POSITIVE, default=default("numProc"),
                   help=f"Horovod ranks (default {default('numProc')})")
    p.add_argument("--epochs", type=POSITIVE, default=default("epochs"),
                   help=f"maximum epochs (default {default('epochs')}; early stopping usually "
                        "ends sooner)")
    p.add_argument("--batch-size", type=POSITIVE, default=default("batchSize"),
                   help=f"batch size per rank (default {default('batchSize')})")
    p.add_argument("--learning-rate", type=_positive_float, default=default("learningRate"),
                   help=f"learning rate of one rank, scaled by --num-proc "
                        f"(default {default('learningRate')})")
    p.add_argument("--optimizer", default=default("optimizer"),
                   help="adam (default), sgd, adadelta, rmsprop")
    p.add_argument("--gpus", choices=USE_GPU_CHOICES, default=default("useGpu"),
                   help="use GPUs: auto (default) uses them when TensorFlow sees one")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train in mixed_float16 (only worth it on GPUs with tensor cores)")
    p.add_argument("--gradient-compression", choices=COMPRESSIONS,
                   default=default("gradientCompression"),
                   help="gradients on the wire: none (default) or fp16 (half the allreduce "
                        "bytes; worth it between nodes)")
    p.add_argument("--backward-passes-per-step", type=POSITIVE,
                   default=default("backwardPassesPerStep"),
                   help="batches accumulated per allreduce and update (default 1)")
    p.add_argument("--allreduce-groups", type=NON_NEGATIVE,
                   default=default("allreduceGroups"),
                   help="grouped gradient allreduces per step: 1 (default) = one for all "
                        "gradients; 0 = one per gradient as it is ready (Horovod's default)")
    p.add_argument("--store", default=None,
                   help="folder for run data, checkpoints and history (default: a temporary "
                        "folder, removed after training)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run in --store from its last epoch "
                        "checkpoint (after a killed driver or a failed run)")
    p.add_argument("--max-retries", type=NON_NEGATIVE, default=default("maxRetries"),
                   help="retries of a failed Horovod run, each from the last checkpoint "
                        f"(default {default('maxRetries')})")


def _add_prepare(sub) -> None:
    from ..data.prepare import DEFAULT_ROW_GROUPS

    p = sub.add_parser("prepare", help="validate a CSV and write preprocessed Parquet",
                       description="CSV → validated, preprocessed, split Parquet for Petastorm.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", help="training CSV (.csv, .csv.gz, local .zip; path or URL)")
    src.add_argument("--synthetic", action="store_true",
                     help="use the embedded Otto-shaped synthetic data instead of a file")
    p.add_argument("--rows", type=POSITIVE, default=None,
                   help="rows of synthetic data (default 61,878, Otto's size)")
    p.add_argument("--test", help="optional unlabelled CSV to transform with the same model")
    p.add_argument("--out", required=True, help="output folder (path, file://, hdfs://, s3a://)")
    _add_csv_role_args(p)
    _add_bad_rows_arg(p, "rejected/")
    p.add_argument("--validation", type=_fraction, default=0.2,
                   help="stratified validation fraction (default 0.2)")
    _add_transform_arg(p)
    p.add_argument("--seed", type=int, default=default("seed"),
                   help="seed of the split and synthetic data")
    p.add_argument("--row-groups", type=POSITIVE, default=DEFAULT_ROW_GROUPS,
                   help=f"Parquet row groups per split (default {DEFAULT_ROW_GROUPS}:"
                        " balanced shards for 1, 2, 3, 4, 6, 8, 12 or 24 ranks)")
    _add_overwrite_arg(p)
    _add_spark_args(p)
    p.set_defaults(func=commands.run_prepare)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train with Horovod ranks and save the model",
                       description="Prepared Parquet (or a CSV) → a PipelineModel (preprocessing "
                                   "+ Keras model) trained by N Horovod ranks.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder written by 'hvd-otto prepare'")
    src.add_argument("--train", help="labelled CSV; the preprocessing is fitted on it")
    p.add_argument("--model", required=True, help="where to save the trained model")
    _add_csv_role_args(p)
    _add_transform_arg(p, "with --train")
    _add_train_args(p)
    _add_overwrite_arg(p, "an existing model")
    _add_spark_args(p)
    p.set_defaults(func=commands.run_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="log loss, accuracy, per-class figures and plots",
                       description="Score labelled data with a saved model: log loss, accuracy, "
                                   "per-class precision/recall, confusion matrix.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--test", help="labelled CSV (same columns as the training file)")
    src.add_argument("--data", help="folder written by 'hvd-otto prepare' (with --split)")
    p.add_argument("--split", choices=EVALUATE_SPLITS, default="validation",
                   help="labelled split of --data (default validation)")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--out", default=None, help="folder for metrics.json, confusion_matrix.png "
                   "and learning_curve.png")
    _add_csv_role_args(p, label=False)
    _add_overwrite_arg(p, "an existing --out")
    _add_spark_args(p)
    p.set_defaults(func=commands.run_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="a Kaggle submission CSV from an unlabelled CSV",
                       description="Unlabelled CSV + saved model → id,Class_1,… probabilities.")
    p.add_argument("--test", required=True, help="unlabelled CSV (Kaggle's test.csv)")
    p.add_argument("--model", required=True, help="a saved model folder")
    p.add_argument("--out", required=True, help="submission CSV to write (path or URL)")
    _add_csv_role_args(p, label=False)
    _add_overwrite_arg(p, "an existing file")
    _add_spark_args(p)
    p.set_defaults(func=commands.run_predict)


def _add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="the whole flow: fit, evaluate, save, predict",
                       description="CSV → fit the Pipeline (StringIndexer → VectorAssembler → "
                                   "count transform → StandardScaler → Horovod Keras) → "
                                   "evaluate on a stratified holdout → save the PipelineModel → "
                                   "predict --test if given. OUT is committed atomically.")
    p.add_argument("--train", required=True, help="labelled CSV (.csv, .csv.gz, local .zip)")
    p.add_argument("--test", default=None, help="unlabelled CSV to predict into submission.csv")
    p.add_argument("--out", required=True, help="output folder (path, file://, hdfs://)")
    _add_csv_role_args(p)
    _add_bad_rows_arg(p, "OUT/rejected/")
    p.add_argument("--holdout", type=_fraction, default=0.2,
                   help="stratified holdout fraction for the evaluation (default 0.2; 0: none)")
    _add_transform_arg(p)
    p.add_argument("--seed", type=int, default=default("seed"), help="seed of the holdout split")
    _add_train_args(p)
    p.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                   help="record the run in MLflow: params, per-epoch metrics, holdout figures, "
                        "plots and the model; URI = a tracking server or store (default: a "
                        "file store in OUT/mlruns)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else hvd-otto)")
    _add_overwrite_arg(p)
    _add_spark_args(p)
    p.set_defaults(func=commands.run_pipeline)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline job on embedded synthetic data",
                       description="The pipeline job on embedded Otto-shaped synthetic data: "
                                   "2 ranks, holdout figures, a saved model, a submission.")
    p.add_argument("--out", default=None, help="output folder (default ./hvd-otto-demo; an "
                   "earlier demo's output there is replaced)")
    p.add_argument("--rows", type=POSITIVE, default=None, help="synthetic rows (default 61,878)")
    p.add_argument("--seed", type=int, default=default("seed"))
    p.add_argument("--num-proc", type=POSITIVE, default=default("numProc"),
                   help=f"Horovod ranks (default {default('numProc')})")
    p.add_argument("--epochs", type=POSITIVE, default=default("epochs"),
                   help=f"maximum epochs (default {default('epochs')})")
    p.add_argument("--overwrite", action="store_true", help="replace any existing --out")
    _add_spark_args(p)
    p.set_defaults(func=commands.run_demo)


def _add_doctor(sub) -> None:
    from .doctor import run_doctor

    p = sub.add_parser("doctor", help="check the stack on the driver and the executors",
                       description="Report Horovod's build (TensorFlow, Gloo, NCCL), TensorFlow "
                                   "and the GPUs it sees, and the pyspark/petastorm/pyarrow "
                                   "versions; with --master (or under spark-submit) the "
                                   "executors' Python workers too. Exit 2 when they differ.")
    p.add_argument("--master", default=None, help="Spark master whose executors to check")
    p.set_defaults(func=run_doctor)


def _add_test(sub) -> None:
    p = sub.add_parser("test", help="run the test suite (source checkout or Docker image)",
                       description="Run the project's pytest suite; extra arguments go to "
                                   "pytest.")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")
    p.set_defaults(func=commands.run_tests)


def build_parser() -> argparse.ArgumentParser:
    """The ``hvd-otto`` parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="hvd-otto",
        description="Horovod-on-Spark training pipeline for Otto-shaped data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_prepare, _add_train, _add_evaluate, _add_predict, _add_pipeline,
                _add_demo, _add_doctor, _add_test):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hvd-otto`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, datefmt="%H:%M:%S",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        with StopSignals(on_stop=cancel_spark_jobs):
            status = args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Interrupted, or pyspark's own SIGINT handler
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C skips the wait
            stop_spark()  # what the JVM logs about the killed tasks comes before our last line
        print(interrupted_message(err, args.command), file=sys.stderr)
        return err.exit_code if isinstance(err, Interrupted) else 130
    return status if isinstance(status, int) else 0


def interrupted_message(err: KeyboardInterrupt, command: str) -> str:
    """One line: what stopped, that nothing was retried or committed, and how to resume."""
    name = f"{err}" if isinstance(err, Interrupted) else "SIGINT"
    line = f"interrupted by {name}: '{command}' stopped; no output was committed"
    run = getattr(err, "run", None)
    if run:
        return (f"{line}. Checkpoints are kept in {run}: run the same command with --resume "
                "(and the same --store) to continue from the last one.")
    if command in ("train", "pipeline"):
        return f"{line}. Nothing to resume (give --store DIR to keep checkpoints of a run)."
    return line + "."


if __name__ == "__main__":
    sys.exit(main())
