"""The store and run-folder contract, shared by the driver and the ranks."""

import json
import os
import pickle

import pytest

from hvd_otto import InputError
from hvd_otto.common.run_folder import RunFolder, RunStore


def committed_run(store: RunStore, name: str, finished: bool = False) -> RunFolder:
    run = RunFolder(os.path.join(store.runs_dir, name))
    os.makedirs(run.checkpoints_dir)
    open(run.checkpoint("epoch-0001.weights.h5"), "w").close()
    run.commit_history({"history": [{"epoch": 1}], "last_weights": "epoch-0001.weights.h5"})
    if finished:
        run.mark_finished()
    return run


def test_every_name_lives_under_the_run_folder(tmp_path):
    run = RunFolder(str(tmp_path / "runs" / "r1"))
    paths = [run.history_path, run.checkpoints_dir, run.run_json_path, run.errors_dir,
             run.ranks_dir, run.fault_marker(1, 2), run.checkpoint("x.h5")]
    assert all(p.startswith(run.path + os.sep) for p in paths)
    assert len(set(paths)) == len(paths)
    assert run.split_url("train") == f"file://{run.path}/data/train"
    assert run.data_url == f"file://{run.path}/data" and run.run_id == "r1"


def test_history_commit_replaces_whole_and_leaves_no_temp(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.read_history() == {} and run.load_checkpoint() is None
    run.commit_history({"history": [1]})
    run.commit_history({"history": [1, 2]})
    assert run.read_history() == {"history": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["history.json"]


def test_a_history_naming_a_missing_checkpoint_is_an_error(tmp_path):
    run = RunFolder(str(tmp_path))
    run.commit_history({"history": [{"epoch": 1}], "last_weights": "epoch-0001.weights.h5"})
    with pytest.raises(RuntimeError, match="epoch-0001.weights.h5, which is missing"):
        run.load_checkpoint()


def test_unfinished_runs_are_those_with_history_and_no_marker_oldest_first(tmp_path):
    store = RunStore(str(tmp_path))
    assert store.unfinished_runs() == []
    committed_run(store, "20250101-a")
    committed_run(store, "20250102-b", finished=True)
    committed_run(store, "20250103-c")
    os.makedirs(os.path.join(store.runs_dir, "20250104-never-committed"))
    assert [r.run_id for r in store.unfinished_runs()] == ["20250101-a", "20250103-c"]
    assert store.unfinished_runs()[0].load_checkpoint()["history"] == [{"epoch": 1}]


def test_new_runs_get_distinct_time_ordered_names(tmp_path):
    store = RunStore(str(tmp_path))
    first, second = store.new_run(now=0), store.new_run(now=86400 * 365)
    assert first.path != second.path and first.run_id < second.run_id
    assert os.path.dirname(first.path) == store.runs_dir
    assert not os.path.exists(first.path)  # created when the run first writes


def test_rank_markers_and_errors(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.ranks_in_state("joined") == [] and run.rank_errors() == ""
    for rank in (1, 0, 10):
        run.mark_rank(rank, "alive")
    run.mark_rank(0, "joined")
    assert run.ranks_in_state("alive") == ["0", "1", "10"]
    assert run.ranks_in_state("joined") == ["0"]
    run.clear_rank_markers()
    assert run.ranks_in_state("alive") == []
    run.write_error(1, "Traceback\nValueError: boom\n")
    assert run.has_errors()
    assert run.rank_errors(clear=True) == "--- rank-1 ---\nTraceback\nValueError: boom"
    assert not run.has_errors()


def test_identity_round_trip(tmp_path):
    run = RunFolder(str(tmp_path / "new"))
    assert run.read_identity() is None
    run.write_identity({"batch_size": 64})
    assert run.read_identity() == {"batch_size": 64}
    assert json.load(open(run.run_json_path)) == {"batch_size": 64}


def test_an_unwritable_store_fails_at_once_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=rf"storePath \(--store\) {blocker} is not writable"):
        RunStore(str(blocker)).check_writable()
    RunStore(str(tmp_path / "fine")).check_writable()
    assert os.listdir(tmp_path / "fine" / "runs") == []  # the probe is removed


def test_run_folders_travel_to_ranks_as_data(tmp_path):
    run = RunFolder(str(tmp_path))
    assert pickle.loads(pickle.dumps(run)).path == run.path
