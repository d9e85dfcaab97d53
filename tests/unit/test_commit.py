"""Committing an output: atomic, checked again at the rename, never replacing what is not ours."""

from __future__ import annotations

import os
import threading

import pytest

from hvd_otto.common.commit import (
    MARKER,
    LocalEntries,
    OutputConflict,
    check_target,
    commit,
    remove_checksums,
)
from hvd_otto.common.errors import InputError

LOCAL = LocalEntries()


def staged_folder(parent, name="staged", text="new"):
    folder = parent / name
    folder.mkdir()
    (folder / "result.txt").write_text(text)
    (folder / MARKER).write_text("{}")
    return folder


def test_commit_moves_the_staged_folder_into_place(tmp_path):
    staged = staged_folder(tmp_path)
    commit(LOCAL, str(staged), str(tmp_path / "out"), overwrite=False)
    assert (tmp_path / "out" / "result.txt").read_text() == "new" and not staged.exists()


def test_an_output_that_appeared_meanwhile_is_kept_and_so_is_the_staged_result(tmp_path):
    staged = staged_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("important")
    with pytest.raises(OutputConflict, match="appeared while this job ran") as caught:
        commit(LOCAL, str(staged), str(out), overwrite=False)
    assert os.listdir(out) == ["precious.txt"] and (out / "precious.txt").read_text() == "important"
    kept = caught.value.kept
    assert kept in str(caught.value) and os.path.basename(kept).startswith("out.not-committed-")
    assert open(os.path.join(kept, "result.txt")).read() == "new"
    assert isinstance(caught.value, InputError)  # exit 2


def test_an_empty_folder_that_appeared_is_not_replaced_either(tmp_path):
    """rename(2) would replace an empty folder; the commit must not."""
    staged = staged_folder(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputConflict):
        commit(LOCAL, str(staged), str(tmp_path / "out"), overwrite=False)
    assert os.listdir(tmp_path / "out") == []


def test_overwrite_replaces_an_output_hvd_otto_wrote(tmp_path):
    old = staged_folder(tmp_path, "out", text="old")
    staged = staged_folder(tmp_path)
    commit(LOCAL, str(staged), str(old), overwrite=True)
    assert (old / "result.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing moved aside is left


def test_overwrite_never_replaces_a_folder_without_the_marker(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("important")
    staged = staged_folder(tmp_path)
    with pytest.raises(OutputConflict, match="did not write") as caught:
        commit(LOCAL, str(staged), str(out), overwrite=True)
    assert os.listdir(out) == ["precious.txt"]
    assert os.path.exists(os.path.join(caught.value.kept, "result.txt"))
    with pytest.raises(InputError, match="replaces only folders hvd-otto wrote"):
        check_target(LOCAL, str(out), overwrite=True)


def test_two_jobs_committing_one_output_exactly_one_wins(tmp_path):
    for round_ in range(20):
        parent = tmp_path / f"round{round_}"
        parent.mkdir()
        staged = [staged_folder(parent, f"staged{i}", text=str(i)) for i in range(2)]
        barrier, outcomes = threading.Barrier(2), {}

        def job(i):
            barrier.wait()
            try:
                commit(LOCAL, str(staged[i]), str(parent / "out"), overwrite=False)
                outcomes[i] = "won"
            except OutputConflict as err:
                outcomes[i] = err.kept

        threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, o in outcomes.items() if o == "won"]
        assert len(winners) == 1, outcomes
        loser = 1 - winners[0]
        assert (parent / "out" / "result.txt").read_text() == str(winners[0])
        assert open(os.path.join(outcomes[loser], "result.txt")).read() == str(loser)


def test_a_file_is_committed_without_replacing_and_overwritten_only_by_its_kind(tmp_path):
    out = tmp_path / "submission.csv"
    new = tmp_path / "part-0.csv"
    new.write_text("id,Class_1\n1,0.5\n")
    commit(LOCAL, str(new), str(out), overwrite=False)
    assert out.read_text().startswith("id,Class_1") and not new.exists()

    new.write_text("id,Class_1\n1,0.7\n")
    with pytest.raises(OutputConflict):
        commit(LOCAL, str(new.replace(tmp_path / "part-1.csv")), str(out), overwrite=False)
    assert out.read_text().endswith("0.5\n")

    newer = tmp_path / "part-2.csv"
    newer.write_text("id,Class_1\n1,0.9\n")
    commit(LOCAL, str(newer), str(out), overwrite=True)  # an earlier submission: replaced
    assert out.read_text().endswith("0.9\n")

    out.write_text("my notes\n")
    other = tmp_path / "part-3.csv"
    other.write_text("id,Class_1\n1,0.1\n")
    with pytest.raises(OutputConflict, match="did not write"):
        commit(LOCAL, str(other), str(out), overwrite=True)
    assert out.read_text() == "my notes\n"


def test_the_already_exists_message_says_what_is_there(tmp_path):
    (tmp_path / "sub.csv").write_text("id,Class_1\n")
    with pytest.raises(InputError, match=r"already exists \(a file\); pass --overwrite"):
        check_target(LOCAL, str(tmp_path / "sub.csv"), overwrite=False, folder=False)
    check_target(LOCAL, str(tmp_path / "sub.csv"), overwrite=True, folder=False)
    ours = staged_folder(tmp_path, "ours")
    with pytest.raises(InputError, match=r"\(a complete hvd-otto result\)"):
        check_target(LOCAL, str(ours), overwrite=False)
    check_target(LOCAL, str(ours), overwrite=True)
    with pytest.raises(InputError, match="is a folder"):
        check_target(LOCAL, str(ours), overwrite=True, folder=False)
    check_target(LOCAL, str(tmp_path / "absent"), overwrite=False)


def test_hadoop_checksum_files_are_removed(tmp_path):
    (tmp_path / "part-0.parquet").write_bytes(b"x")
    (tmp_path / ".part-0.parquet.crc").write_bytes(b"c")
    (tmp_path / ".hidden.crc").write_bytes(b"not a checksum of an existing file")
    remove_checksums(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".hidden.crc", "part-0.parquet"]
