"""The seed's whole flow as one job: CSV → fitted Pipeline → holdout figures → saved model.

Output folder (committed atomically: complete with ``_SUCCESS`` or absent)::

    OUT/model/                 the fitted PipelineModel (preprocessing + HorovodKerasModel)
    OUT/metrics.json           holdout log loss, accuracy, per-class figures, confusion matrix
    OUT/confusion_matrix.png   OUT/learning_curve.png
    OUT/submission.csv         Kaggle submission of --test (when given)
    OUT/rejected/{train,test}/ quarantined rows (--bad-rows quarantine)
    OUT/summary.json           what ran, with which settings, and the headline figures
    OUT/mlruns/                MLflow file store (--mlflow without a URI), written after the
                               commit: an interrupted logging leaves a run that is not FINISHED
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Sequence

from ..common import fs as store
from ..common.errors import InputError
from ..data.csv_source import (
    ParsedCsv,
    check_feature_columns,
    handle_bad_rows,
    read_csv,
    stage_source,
)
from ..data.features import build_preprocessing
from ..data.prepare import stratified_split
from .scoring import SavedModel, evaluate_frame, write_evaluation, write_submission

log = logging.getLogger(__name__)


class PhaseClock:
    """Seconds of consecutive phases: ``lap(name)`` closes the phase that ran since the last."""

    def __init__(self, clock=time.perf_counter):
        self._clock, self._last, self.laps = clock, clock(), {}

    def lap(self, name: str) -> None:
        now = self._clock()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


@dataclass
class PipelineResult:
    out: str
    figures: dict | None
    summary: dict


def build_pipeline(feature_cols: Sequence[str], label_col: str, transform: str, estimator):
    """The seed's Pipeline: StringIndexer → VectorAssembler → count transform → scaler → Keras."""
    from pyspark.ml import Pipeline

    stages = build_preprocessing(feature_cols, label_col, transform).getStages()
    return Pipeline(stages=[*stages, estimator])


def save_model(fs: store.HadoopFs, model, url: str) -> None:
    """Save a PipelineModel into ``url`` (inside a staging folder) and mark it complete."""
    model.write().save(url)
    fs.write_text(store.join(url, store.SUCCESS), "")


def run_pipeline(spark, train: str, out: str, estimator, *, test: str | None = None,
                 id_col: str = "id", label_col: str = "target", bad_rows: str = "fail",
                 holdout: float = 0.2, transform: str = "log1p", seed: int = 42,
                 overwrite: bool = False, job: str = "pipeline", mlflow: str | None = None,
                 experiment: str | None = None) -> PipelineResult:
    """Fit the seed Pipeline on ``train`` minus a stratified holdout, evaluate, save, predict.

    ``mlflow``: None = no tracking by the job; "" = a file store in ``OUT/mlruns``; else a
    tracking URI. The job then records one run itself (the Estimator's own tracking is off).
    """
    started = time.perf_counter()
    fs = store.HadoopFs(spark)
    out_url = store.to_url(out)
    store.check_output(fs, out_url, overwrite)
    if not 0 <= holdout < 1:
        raise InputError(f"--holdout must be in [0, 1), got {holdout}.")
    tracking = _pipeline_tracking_uri(mlflow, out_url)
    if tracking:
        estimator.setTrackingUri("off")
    scratch = store.to_url(tempfile.mkdtemp(prefix="hvd-otto-pipeline-"))
    clock = PhaseClock()
    try:
        parsed, test_parsed = _read_inputs(spark, fs, train, test, scratch, id_col, label_col)
        clock.lap("read_and_validate_csv")
        summary: dict = {"job": job, "train": train, "test": test, "holdout": holdout,
                         "seed": seed, "transform": transform, "bad_rows": bad_rows}
        with store.atomic_dir(fs, out_url, overwrite) as staging:
            rejected = {"train": handle_bad_rows(parsed, bad_rows, staging, "train", out)}
            if test_parsed is not None:
                rejected["test"] = handle_bad_rows(test_parsed, bad_rows, staging, "test", out)
            fit_rows, holdout_rows = stratified_split(parsed.good_rows, label_col, holdout, seed)
            log.info("fitting the Pipeline on %s (%s good rows, %.0f%% held out)",
                     parsed.display, f"{parsed.total - parsed.bad:,}", holdout * 100)
            model = build_pipeline(parsed.schema.feature_cols, label_col, transform,
                                   estimator).fit(fit_rows)
            clock.lap("fit_pipeline")
            saved = SavedModel(model)
            save_model(fs, model, store.join(staging, "model"))
            clock.lap("save_model")
            figures = None
            if holdout > 0:
                figures = evaluate_frame(saved, holdout_rows)
                write_evaluation(fs, staging, figures, saved.keras_stage.getHistory())
                clock.lap("score_holdout")
            if test_parsed is not None:
                write_submission(fs, saved, test_parsed.good_rows,
                                 store.join(staging, "submission.csv"), id_col)
                summary["submission_rows"] = test_parsed.total - test_parsed.bad
                clock.lap("write_submission")
            summary.update(_run_summary(saved.keras_stage, parsed, rejected, figures, started))
            summary["phases"] = clock.laps
            summary["fit_phases"] = saved.keras_stage.getSummary().get("phases")
            fs.write_text(store.join(staging, "summary.json"), json.dumps(summary, indent=2))
            for done in (parsed, test_parsed):
                if done is not None:
                    done.rows.unpersist()
    finally:
        fs.delete(scratch)
    if tracking:
        _track(tracking, experiment, estimator, saved, figures, summary)
    return PipelineResult(out_url, figures, summary)


def _pipeline_tracking_uri(mlflow: str | None, out_url: str) -> str | None:
    """The MLflow store of ``--mlflow [URI]``; checked (and mlflow imported) before any work."""
    from pathlib import Path

    from ..driver.tracking import require_mlflow

    if mlflow is None:
        return None
    uri = mlflow
    if not uri:
        local = store.local_path(out_url)
        if local is None:
            raise InputError(f"--mlflow without a URI keeps a file store in OUT/mlruns, which "
                             f"needs a local OUT ({out_url}); give a tracking URI.")
        uri = (Path(local) / "mlruns").as_uri()
    require_mlflow(uri)
    return uri


def _track(uri: str, experiment: str | None, estimator, saved: SavedModel,
           figures: dict | None, summary: dict) -> None:
    """Record the job as one MLflow run: the Estimator's params, per-epoch metrics, holdout
    figures, plots, summary and model; the outcome goes into ``summary``."""
    import os

    from ..driver.tracking import experiment_name, record_fit, tracked_params
    from .evaluate import save_plots

    keras = saved.keras_stage
    with tempfile.TemporaryDirectory(prefix="hvd-otto-mlflow-") as tmp:
        files = [os.path.join(tmp, "summary.json")]
        with open(files[0], "w") as f:
            json.dump(summary, f, indent=2)
        metrics = {}
        if figures:
            metrics = {"holdout_log_loss": figures["log_loss"],
                       "holdout_accuracy": figures["accuracy"]}
            files.append(os.path.join(tmp, "metrics.json"))
            with open(files[-1], "w") as f:
                json.dump(figures, f, indent=2)
            files += save_plots(figures, [], tmp)
        record_fit(summary, uri, experiment_name(experiment), tracked_params(estimator),
                   keras.getHistory(), keras.getModelBytes(), metrics, files)


def _read_inputs(spark, fs, train: str, test: str | None, scratch: str, id_col: str,
                 label_col: str) -> tuple[ParsedCsv, ParsedCsv | None]:
    """Read and validate the training CSV and, before any training, the test CSV."""
    url, display = stage_source(fs, train, scratch)
    parsed = read_csv(spark, url, display, id_col, label_col)
    if not test:
        return parsed, None
    # Validated before training: a bad test file must not cost a training run.
    test_url, test_display = stage_source(fs, test, store.join(scratch, "test"))
    test_parsed = read_csv(spark, test_url, test_display, id_col, label_col, require_label=False)
    check_feature_columns(test_display, test_parsed.schema.feature_cols,
                          parsed.schema.feature_cols)
    if test_parsed.schema.label_col:
        raise InputError(f"{test_display}, line 1 (header): the test file has a "
                         f"'{label_col}' column; a test file is unlabelled (drop it).")
    return parsed, test_parsed


def _run_summary(keras, parsed: ParsedCsv, rejected: dict, figures: dict | None,
                 started: float) -> dict:
    """The headline facts of a pipeline run for ``summary.json``."""
    train_summary = keras.getSummary()
    return {
        "rows": {"input": parsed.total, "rejected": rejected},
        "epochs": len(keras.getHistory()), "best_epoch": train_summary.get("best_epoch"),
        "num_proc": train_summary.get("num_proc"), "devices": train_summary.get("devices"),
        "fit_seconds": train_summary.get("fit_seconds"),
        "holdout_figures": {k: figures[k] for k in ("rows", "log_loss", "accuracy")}
        if figures else None,
        "seconds": time.perf_counter() - started,
    }


def previous_job(fs: store.HadoopFs, out_url: str) -> str | None:
    """The ``job`` recorded in an existing output's ``summary.json`` (``None`` if not one)."""
    try:
        return json.loads(fs.read_text(store.join(out_url, "summary.json"))).get("job")
    except Exception:  # noqa: BLE001 - absent or unreadable: not a previous output
        return None
