"""The store and its run folders: every path and file name of a training run, in one place.

Layout (``STORE`` is ``storePath``; the driver and every rank read and write it)::

    STORE/runs/<run id>/
        data/train/, data/validation/   Petastorm-ready Parquet, only while the fit runs
        run.json                        what the run trains (checked when it is resumed)
        history.json                    rank 0's committed epochs: the commit point of each epoch
        checkpoints/                    the last and the best epoch's weights
        ranks/rank-N.alive|.joined      start-up markers for the driver's watchdog
        errors/rank-N.txt               a failed rank's traceback
        faults/                         markers of the test-only fault hook (fired once per run)
        _FINISHED                       the run ended and its model was returned

Driver and ranks use :class:`RunFolder`; nothing else spells these names.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

from .errors import InputError
from .fs import to_url

RUNS = "runs"
DATA = "data"
CHECKPOINTS = "checkpoints"
HISTORY = "history.json"
RUN_JSON = "run.json"
ERRORS = "errors"
RANKS = "ranks"
FAULTS = "faults"
FINISHED = "_FINISHED"


class RunFolder:
    """One training run's folder (a local or shared-filesystem path)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"

    @property
    def run_id(self) -> str:
        return os.path.basename(self.path)

    @property
    def url(self) -> str:
        return to_url(self.path)

    # --- training data (written by Spark, so URLs) ----------------------------------------------

    @property
    def data_url(self) -> str:
        return f"{self.url}/{DATA}"

    def split_url(self, split: str) -> str:
        """``data/train`` or ``data/validation`` as a URL for Spark and Petastorm."""
        return f"{self.data_url}/{split}"

    # --- files ---------------------------------------------------------------------------------

    @property
    def history_path(self) -> str:
        return os.path.join(self.path, HISTORY)

    @property
    def checkpoints_dir(self) -> str:
        return os.path.join(self.path, CHECKPOINTS)

    def checkpoint(self, name: str) -> str:
        return os.path.join(self.checkpoints_dir, name)

    @property
    def logs_dir(self) -> str:
        """TensorBoard event files (rank 0): ``tensorboard --logdir RUN/logs``."""
        return os.path.join(self.path, "logs")

    @property
    def run_json_path(self) -> str:
        return os.path.join(self.path, RUN_JSON)

    @property
    def errors_dir(self) -> str:
        return os.path.join(self.path, ERRORS)

    @property
    def ranks_dir(self) -> str:
        return os.path.join(self.path, RANKS)

    def fault_marker(self, rank: int, epoch: int) -> str:
        return os.path.join(self.path, FAULTS, f"rank{rank}-epoch{epoch}")

    # --- state ---------------------------------------------------------------------------------

    def is_finished(self) -> bool:
        return os.path.exists(os.path.join(self.path, FINISHED))

    def has_history(self) -> bool:
        return os.path.exists(self.history_path)

    def mark_finished(self) -> None:
        with open(os.path.join(self.path, FINISHED), "w"):
            pass

    def read_history(self) -> dict:
        """``history.json`` as a dict (empty when absent or being replaced)."""
        try:
            with open(self.history_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def commit_history(self, state: dict) -> None:
        """Write ``history.json`` with one rename: readers see the old or the new state."""
        tmp = self.history_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.history_path)

    def load_checkpoint(self) -> dict | None:
        """The last committed epoch state (``None`` when nothing was committed)."""
        saved = self.read_history()
        weights = saved.get("last_weights")
        if not saved.get("history") or not weights:
            return None
        if not os.path.exists(self.checkpoint(weights)):
            raise RuntimeError(f"{self.history_path} names checkpoint {weights}, which is "
                               "missing; the run folder was changed by hand: start a new run.")
        return saved

    def read_identity(self) -> dict | None:
        try:
            with open(self.run_json_path) as f:
                return json.load(f)
        except OSError:
            return None

    def write_identity(self, identity: dict) -> None:
        os.makedirs(self.path, exist_ok=True)
        with open(self.run_json_path, "w") as f:
            json.dump(identity, f, indent=1)

    # --- ranks' markers and errors ---------------------------------------------------------------

    def mark_rank(self, rank, state: str) -> None:
        """Leave ``ranks/rank-N.<state>`` (``alive``, ``joined``) for the driver's watchdog."""
        os.makedirs(self.ranks_dir, exist_ok=True)
        with open(os.path.join(self.ranks_dir, f"rank-{rank}.{state}"), "w"):
            pass

    def ranks_in_state(self, state: str) -> list[str]:
        """Ranks (as strings, sorted) that left a ``state`` marker."""
        names = os.listdir(self.ranks_dir) if os.path.isdir(self.ranks_dir) else []
        suffix = f".{state}"
        return sorted(n[len("rank-"):-len(suffix)] for n in names
                      if n.startswith("rank-") and n.endswith(suffix))

    def clear_rank_markers(self) -> None:
        shutil.rmtree(self.ranks_dir, ignore_errors=True)

    def write_error(self, rank, text: str) -> None:
        os.makedirs(self.errors_dir, exist_ok=True)
        with open(os.path.join(self.errors_dir, f"rank-{rank}.txt"), "w") as f:
            f.write(text)

    def has_errors(self) -> bool:
        return os.path.isdir(self.errors_dir)

    def rank_errors(self, clear: bool = False) -> str:
        """The tracebacks the ranks wrote into ``errors/`` (removed with ``clear``)."""
        if not os.path.isdir(self.errors_dir):
            return ""
        parts = []
        for name in sorted(os.listdir(self.errors_dir)):
            with open(os.path.join(self.errors_dir, name)) as f:
                parts.append(f"--- {name[:-4]} ---\n" + f.read().strip())
        if clear:
            shutil.rmtree(self.errors_dir, ignore_errors=True)
        return "\n".join(parts)


class RunStore:
    """The store folder: holds ``runs/``, one folder per training run."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.runs_dir = os.path.join(self.path, RUNS)

    def check_writable(self) -> None:
        """Fail at once, naming the folder, when the store cannot be written."""
        try:
            os.makedirs(self.runs_dir, exist_ok=True)
            probe = os.path.join(self.runs_dir, f".probe-{uuid.uuid4().hex[:8]}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as err:
            raise InputError(f"storePath (--store) {self.path} is not writable ({err.strerror or err}); "
                             "choose a folder the driver and every executor can write.") from None

    def unfinished_runs(self) -> list[RunFolder]:
        """Runs with at least one committed epoch and no ``_FINISHED`` marker, oldest first."""
        if not os.path.isdir(self.runs_dir):
            return []
        names = sorted(os.listdir(self.runs_dir))
        runs = [RunFolder(os.path.join(self.runs_dir, name)) for name in names]
        return [run for run in runs if run.has_history() and not run.is_finished()]

    def new_run(self, now: float | None = None) -> RunFolder:
        """A fresh run folder name (created when the run first writes)."""
        stamp = time.strftime("%Y%m%d-%H%M%S-", time.localtime(now))
        return RunFolder(os.path.join(self.runs_dir, stamp + uuid.uuid4().hex[:6]))
