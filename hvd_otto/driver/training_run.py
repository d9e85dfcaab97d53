"""One training run on the driver: pick its folder, check a resume, launch with retries,
check the ranks agree, and summarise. No Spark here: the launcher is passed in."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Callable

from ..common.errors import InputError, Interrupted, TrainingError
from ..common.rank_config import RankConfig
from ..common.run_folder import RunFolder, RunStore
from .launcher import Launcher
from .watchdog import ProgressWatcher, RunWatchdog

log = logging.getLogger(__name__)

#: What must not change when a run is resumed (recorded in run.json).
RUN_IDENTITY = ("n_features", "n_classes", "optimizer", "batch_size", "model_digest",
                "num_proc")


def choose_run(store: RunStore, resume: bool, store_given: bool) -> tuple[RunFolder, bool]:
    """The run folder of a fit: the latest unfinished run when resuming, else a new one."""
    unfinished = store.unfinished_runs()
    if resume:
        if not store_given:
            raise InputError("resume needs storePath (--store): the store of the run to "
                             "continue.")
        if not unfinished:
            raise InputError(f"resume (--resume): {store.runs_dir} has no unfinished run with a "
                             "checkpoint to continue; start without resume.")
        return unfinished[-1], True
    if unfinished:
        log.warning("%s holds %d unfinished run(s), the latest %s; it is kept, and this fit "
                    "starts a new run (pass resume=True / --resume to continue it instead)",
                    store.path, len(unfinished), unfinished[-1].run_id)
    return store.new_run(), False


def run_identity(config: RankConfig, num_proc: int) -> dict:
    """The facts a resumed run must share with the run it continues."""
    spec = json.dumps(config.model, sort_keys=True, default=lambda b: b.hex())
    return {"n_features": config.n_features, "n_classes": config.n_classes,
            "optimizer": config.optimizer, "batch_size": config.batch_size,
            "model_digest": hashlib.sha256(spec.encode()).hexdigest()[:16],
            "num_proc": num_proc}


def check_run_matches(run: RunFolder, config: RankConfig, num_proc: int) -> None:
    """Record what a run trains; a resumed run must train the same model on the same data."""
    identity = run_identity(config, num_proc)
    before = run.read_identity() if config.resume else None
    if before is None:
        run.write_identity(identity)
        return
    changed = [f"{k}: {before.get(k)} → {identity[k]}" for k in RUN_IDENTITY
               if before.get(k) != identity[k]]
    if changed:
        raise InputError(f"cannot resume {run.path}: it trains something else now "
                         f"({'; '.join(changed)}); start a new run without resume (--resume).")


@dataclasses.dataclass
class RetryPolicy:
    max_retries: int
    start_timeout: int
    verbose: bool
    grace: float = 30.0  # seconds the others may stay blocked after a rank failed
    poll_interval: float = 1.0  # seconds between the watchdog's and the progress' looks
    #: The signal that told the driver to stop (SIGINT/SIGTERM), else None; a failure after
    #: one is the stop itself and is not retried.
    stopped_by: Callable[[], int | None] = lambda: None


def run_with_retries(launcher: Launcher, fn: Callable[[RankConfig], dict], config: RankConfig,
                     num_proc: int, policy: RetryPolicy,
                     clock: Callable[[], float] = time.monotonic) -> tuple[list[dict], int]:
    """Run the ranks under a watchdog; after a failure, run again from the last committed epoch.

    Returns the ranks' results (sorted by rank) and the attempts it took; raises
    :class:`TrainingError` with the ranks' tracebacks when every attempt failed.
    """
    run = RunFolder(config.run_dir)
    attempts = policy.max_retries + 1
    for attempt in range(1, attempts + 1):
        run.clear_rank_markers()
        watchdog = RunWatchdog(run, num_proc, policy.start_timeout, launcher.cancel,
                               grace=policy.grace, interval=policy.poll_interval, clock=clock)
        progress = ProgressWatcher(run, enabled=policy.verbose, interval=policy.poll_interval)
        try:
            with progress, watchdog:
                results = launcher.launch(fn, config, num_proc, policy.start_timeout,
                                          policy.verbose)
            return sorted(results, key=lambda r: r["rank"]), attempt
        except Exception as err:
            if policy.stopped_by():  # the ranks died because we stopped them
                raise Interrupted(policy.stopped_by()) from err
            detail = run.rank_errors(clear=True)
            if watchdog.reason:
                detail = (detail + "\n" if detail else "") + watchdog.reason
            if attempt == attempts:
                raise TrainingError(
                    f"Horovod training failed after {attempt} attempt(s): {err}"
                    + (f"\n{detail}" if detail else "")
                    + f"\nCheckpoints are kept in {run.path}; with a storePath, "
                    "resume=True (--resume) continues from the last one."
                ) from err
            saved = run.load_checkpoint()
            where = (f"epoch {len(saved['history'])} checkpoint" if saved
                     else "the start (no epoch was committed)")
            cause = (detail or str(err)).strip().splitlines()[-1][:300]
            log.warning("Horovod run failed (attempt %d of %d: %s); retrying from %s",
                        attempt, attempts, cause, where)
            config = dataclasses.replace(config, resume=True)
    raise AssertionError("unreachable")


#: The phases of a fit, in order, each ending at the named mark (driver or slowest rank).
FIT_PHASES = (
    ("checks", "staging_started"),       # params, slots, label scan, model check
    ("stage_data", "staged"),            # the Parquet copy the ranks read
    ("launch_ranks", "rank_started"),    # Spark job, Horovod task services, rank processes
    ("import_tensorflow", "imported"),   # import tensorflow + horovod in the rank
    ("join_ring", "joined"),             # hvd.init: Gloo rendezvous, device pinning
    ("read_shards", "data_ready"),       # Petastorm reads of the rank's shards
    ("build_model", "compiled"),         # model, optimizer, checkpoint restore
    ("to_first_batch", "first_batch"),   # callbacks, the input pipeline's first batch
    ("train", "trained"),                # model.fit from the first batch on
    ("return_model", "returned"),        # model bytes back, summary, history committed
)


def fit_phases(driver_marks: dict[str, float], rank_marks: list[dict[str, float]]) -> dict:
    """Seconds of each :data:`FIT_PHASES` phase from wall-clock marks.

    A rank phase ends when the slowest rank reaches its mark (the ring waits for it); a phase
    whose mark is missing (an older rank, a fake launcher) is left out. ``driver_marks`` holds
    ``started``, ``staging_started``, ``staged`` and ``returned``.
    """
    marks = dict(driver_marks)
    for name in {k for m in rank_marks for k in m}:
        marks[name] = max(m[name] for m in rank_marks if name in m)
    phases, previous = {}, marks.get("started")
    for phase, mark in FIT_PHASES:
        if mark not in marks or previous is None:
            previous = marks.get(mark)
            continue
        phases[phase] = round(max(0.0, marks[mark] - previous), 3)
        previous = marks[mark]
    return phases


def summarise(results: list[dict], config: RankConfig, num_proc: int, attempts: int,
              fit_started: float, now: float, driver_marks: dict | None = None) -> dict:
    """The fitted model's summary from the ranks' results; ranks must end identical."""
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise TrainingError(f"ranks ended with different weights {digests}; training diverged")
    chief = results[0]
    first_batch = min((r["first_batch_time"] for r in results if r["first_batch_time"]),
                      default=now)
    return {
        "run": RunFolder(config.run_dir).url, "num_proc": num_proc,
        "n_features": config.n_features, "n_classes": config.n_classes,
        "best_epoch": chief["best_epoch"],
        "launch_seconds": first_batch - fit_started,
        "fit_seconds": now - fit_started,
        "devices": [r["device"] for r in results],
        "cpu_threads": [r.get("cpu_threads") for r in results],
        "allreduce": sorted({r["allreduce"] for r in results}),
        "shard_rows": [r["shard_rows"] for r in results],
        "rank_digests": [r["digest"] for r in results],
        "attempts": attempts, "resumed_after_epoch": chief["resumed_after"] or None,
        "phases": fit_phases({"started": fit_started, **(driver_marks or {}), "returned": now},
                             [r["marks"] for r in results if r.get("marks")]),
    }


def finish_run(run: RunFolder, history: list[dict], summary: dict) -> None:
    """Write the final history with the summary, then the ``_FINISHED`` marker."""
    run.commit_history({"history": history, **summary})
    run.mark_finished()
