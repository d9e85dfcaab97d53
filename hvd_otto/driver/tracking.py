"""MLflow tracking of a fit: one run with the params, per-epoch metrics, history, plot, model.

Tracking is on when the Estimator's ``trackingUri`` is set or ``MLFLOW_TRACKING_URI`` is in the
environment (``trackingUri="off"`` turns it off either way). Everything goes through an explicit
``MlflowClient``; MLflow's global tracking URI (which its artifact upload to a server reads) is
set only while a run is logged and restored after, so one process can track to several stores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator, Mapping

from ..common.errors import InputError, error_summary

log = logging.getLogger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "hvd-otto"
OFF = "off"
#: Params that are Python objects: MLflow gets a readable label instead of the value.
_OBJECT_PARAMS = ("model", "optimizer", "loss", "metrics", "callbacks", "customObjects")


def tracking_uri(param: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The MLflow store a fit records to, or None when tracking is off."""
    uri = param if param else environ.get(ENV_URI) or None
    return None if uri == OFF else uri


def experiment_name(param: str | None, environ: Mapping[str, str] = os.environ) -> str:
    return param or environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT


def require_mlflow(uri: str | None) -> None:
    """Tracking asked for without MLflow installed is an error before any work."""
    if uri is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise InputError(f"MLflow tracking is on (tracking URI {uri}) but mlflow is not "
                         "installed: pip install 'hvd-otto[mlflow]', or unset "
                         f"{ENV_URI} / set trackingUri='off'.") from None


def epoch_metrics(history: list[dict]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every numeric figure of every epoch; step = the epoch number."""
    points = []
    for entry in history:
        for key, value in entry.items():
            if key in ("epoch", "best") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                points.append((key, float(value), int(entry["epoch"])))
    return points


def tracked_params(estimator) -> dict[str, str]:
    """The Estimator's params as MLflow params: values, and a label for Keras objects."""
    from ..common.keras_objects import loss_spec, metrics_spec, optimizer_spec, spec_label

    labels = {"optimizer": lambda v: spec_label(optimizer_spec(v)),
              "loss": lambda v: spec_label(loss_spec(v)),
              "metrics": lambda v: ", ".join(spec_label(s) for s in metrics_spec(v)),
              "callbacks": lambda v: ", ".join(type(c).__name__ for c in v),
              "customObjects": lambda v: ", ".join(sorted(v)),
              "model": lambda v: f"{v.name} ({v.count_params():,} parameters)"}
    params = {}
    for param in estimator.params:
        if not estimator.isDefined(param) or param.name == "trackingUri":
            continue
        value = estimator.getOrDefault(param)
        if value is None:
            continue
        params[param.name] = (labels[param.name](value) if param.name in _OBJECT_PARAMS
                              else str(value))[:6000]
    return params


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for a block, then put back as it was (the
    module's value and ``MLFLOW_TRACKING_URI``): uploads to a tracking server's
    ``mlflow-artifacts:`` store resolve the server from the global URI, not the client's."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    module_before, env_before = utils._tracking_uri, os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = module_before
        if env_before is None:
            os.environ.pop(ENV_URI, None)
        else:
            os.environ[ENV_URI] = env_before


def log_fit(uri: str, experiment: str, params: Mapping[str, str], history: list[dict],
            model_bytes: bytes, metrics: Mapping[str, float] | None = None,
            files: list[str] = ()) -> str:
    """Record one finished run; returns its id. ``metrics`` are final figures (step 0),
    ``files`` more local files to attach. A failure marks the run FAILED and raises."""
    from mlflow.tracking import MlflowClient

    with using_tracking_uri(uri):
        return _log_fit(MlflowClient(tracking_uri=uri), uri, experiment, params, history,
                        model_bytes, metrics, files)


def _log_fit(client, uri: str, experiment: str, params: Mapping[str, str],
             history: list[dict], model_bytes: bytes, metrics: Mapping[str, float] | None,
             files: list[str]) -> str:
    from mlflow.entities import Metric, Param

    from ..common.plots import save_learning_curve

    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, tags={"mlflow.source.name": "hvd-otto"}).info.run_id
    try:
        now = int(time.time() * 1000)
        points = [Metric(k, v, now, step) for k, v, step in epoch_metrics(history)]
        points += [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        entries = [Param(k, v) for k, v in params.items()]
        for i in range(0, max(len(points), len(entries)), 100):
            client.log_batch(run_id, metrics=points[i:i + 100], params=entries[i:i + 100])
        with tempfile.TemporaryDirectory(prefix="hvd-otto-mlflow-") as tmp:
            history_path = os.path.join(tmp, "history.json")
            with open(history_path, "w") as f:
                json.dump(history, f, indent=2)
            client.log_artifact(run_id, history_path)
            curve = os.path.join(tmp, "learning_curve.png")
            if save_learning_curve(history, curve):
                client.log_artifact(run_id, curve)
            model_path = os.path.join(tmp, "model.keras")
            with open(model_path, "wb") as f:
                f.write(model_bytes)
            client.log_artifact(run_id, model_path, "model")
        for path in files:
            client.log_artifact(run_id, path)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    log.info("MLflow run %s recorded in %s (experiment '%s')", run_id, uri, experiment)
    return run_id


def record_fit(summary: dict, uri: str, experiment: str, params: Mapping[str, str],
               history: list[dict], model_bytes: bytes,
               metrics: Mapping[str, float] | None = None, files: list[str] = ()) -> None:
    """:func:`log_fit` with its outcome in ``summary`` (``mlflow_run_id``, or ``mlflow_error``
    and a warning): a tracking server that is down never costs the training result."""
    summary["mlflow_tracking_uri"] = uri
    try:
        summary["mlflow_run_id"] = log_fit(uri, experiment, params, history, model_bytes,
                                           metrics, files)
    except Exception as err:  # noqa: BLE001 - whatever MLflow raised, the model is kept
        summary["mlflow_error"] = error_summary(err)
        log.warning("the MLflow run was not recorded in %s (%s); the training result is kept",
                    uri, summary["mlflow_error"])
