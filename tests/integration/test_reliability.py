"""Faults injected on purpose: a rank that dies mid-epoch, a run resumed after a failure,
a store that cannot be written, interrupted writes, tampered models."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvd_otto import HorovodKerasEstimator, InputError, TrainingError
from hvd_otto.common.rank_config import FAULT_ENV
from hvd_otto.data import synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    """A prepared folder (Parquet train/validation splits) of 2,000 synthetic rows."""
    from hvd_otto import prepare

    base = tmp_path_factory.mktemp("reliability")
    csv = synthetic.write_csv(str(base / "train.csv"), rows=2000, seed=11, n_features=12)
    frame = synthetic.generate(rows=2000, seed=11, n_features=12)
    frame.drop(columns=["target"]).head(300).to_csv(base / "test.csv", index=False)
    prepare(spark, csv, str(base / "data"), row_groups=4)
    return base


@pytest.fixture
def fault(monkeypatch):
    """Set the test-only fault hook for one test."""
    def inject(spec: str) -> None:
        monkeypatch.setenv(FAULT_ENV, spec)
    return inject


def _train_frame(spark, prepared):
    return spark.read.parquet(str(prepared / "data" / "train"))


def test_a_rank_death_mid_epoch_is_retried_from_the_checkpoint(spark, prepared, tmp_path,
                                                               fault, caplog, monkeypatch):
    fault("rank=1,epoch=2,batch=2")
    est = HorovodKerasEstimator(numProc=2, epochs=4, earlyStoppingPatience=0, maxRetries=1,
                                storePath=str(tmp_path / "store"))
    with caplog.at_level(logging.WARNING, logger="hvd_otto"):
        model = est.fit(_train_frame(spark, prepared))
    summary = model.getSummary()
    assert summary["attempts"] == 2 and summary["resumed_after_epoch"] == 1
    assert [h["epoch"] for h in model.getHistory()] == [1, 2, 3, 4]  # continuous, no repeats
    retry = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retry and "attempt 1 of 2" in retry[0] and "epoch 1 checkpoint" in retry[0]
    run = Path(summary["run"].replace("file://", ""))
    assert (run / "faults" / "rank1-epoch2").exists() and (run / "_FINISHED").exists()
    losses = [h["val_loss"] for h in model.getHistory()]
    assert losses[-1] < losses[0]  # training went on from the weights, not from scratch
    assert len(set(summary["rank_digests"])) == 1
    # exact resume: the same fit uninterrupted ends with the same weights and figures
    # (optimizer state in the checkpoint; data order and dropout from seed, epoch and rank)
    monkeypatch.delenv(FAULT_ENV)
    straight = est.copy({est.storePath: str(tmp_path / "straight")}).fit(
        _train_frame(spark, prepared))
    assert straight.getSummary()["attempts"] == 1
    assert straight.getSummary()["rank_digests"] == summary["rank_digests"]
    for a, b in zip(straight.getHistory(), model.getHistory()):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6), (a, b)


def test_resume_continues_a_failed_run_and_a_new_run_never_clobbers_it(prepared, tmp_path,
                                                                       fault, capsys):
    from hvd_otto.app.cli import main

    store, data = tmp_path / "store", prepared / "data"
    fault("rank=0,epoch=2")
    assert main(["train", "--data", str(data), "--model", str(tmp_path / "m1"), "--epochs", "3",
                 "--store", str(store), "--max-retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "Horovod training failed after 1 attempt(s)" in err and "--resume" in err
    assert not (tmp_path / "m1").exists()
    (failed_run,) = (store / "runs").iterdir()
    history = json.loads((failed_run / "history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [1]
    # the hook fires once per run folder, so the resumed run goes through
    assert main(["train", "--data", str(data), "--model", str(tmp_path / "m1"), "--epochs", "3",
                 "--store", str(store), "--resume"]) == 0
    assert [p.name for p in (store / "runs").iterdir()] == [failed_run.name]
    final = json.loads((failed_run / "history.json").read_text())
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3]
    assert final["resumed_after_epoch"] == 1 and (failed_run / "_FINISHED").exists()
    assert main(["train", "--data", str(data), "--model", str(tmp_path / "m2"), "--epochs", "3",
                 "--store", str(store), "--resume"]) == 2
    assert "no unfinished run" in capsys.readouterr().err


def test_resume_without_a_store_or_with_another_model_is_refused(prepared, tmp_path, capsys,
                                                                spark):
    from hvd_otto.app.cli import main

    assert main(["train", "--data", str(prepared / "data"), "--model", str(tmp_path / "m"),
                 "--resume"]) == 2
    assert "--resume needs --store" in capsys.readouterr().err
    run = tmp_path / "store" / "runs" / "20260101-000000-abcdef"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"n_features": 12, "n_classes": 9,
                                              "optimizer": "sgd", "batch_size": 128,
                                              "model_digest": "x", "num_proc": 2}))
    (run / "history.json").write_text(json.dumps({"history": [{"epoch": 1}],
                                                  "last_weights": "epoch-0001.weights.h5"}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-0001.weights.h5").write_bytes(b"")
    est = HorovodKerasEstimator(numProc=2, epochs=2, storePath=str(tmp_path / "store"),
                                resume=True)
    with pytest.raises(InputError, match=r"cannot resume .*optimizer: sgd → adam"):
        est.fit(_train_frame(spark, prepared))


def test_a_store_that_cannot_be_written_fails_at_once(spark, prepared, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    started = time.monotonic()
    est = HorovodKerasEstimator(numProc=2, epochs=1, storePath=str(blocked / "store"))
    with pytest.raises(InputError, match=r"storePath .*blocked/store is not writable"):
        est.fit(_train_frame(spark, prepared))
    assert time.monotonic() - started < 60


def test_a_rank_that_never_starts_fails_within_the_start_timeout(spark, prepared, tmp_path,
                                                                 fault):
    fault("rank=1,epoch=0")
    est = HorovodKerasEstimator(numProc=2, epochs=1, startTimeout=20, maxRetries=0,
                                storePath=str(tmp_path / "store"))
    started = time.monotonic()
    with pytest.raises(TrainingError, match="Horovod training failed after 1 attempt"):
        est.fit(_train_frame(spark, prepared))
    assert time.monotonic() - started < 120


# --- interrupted writes leave nothing that looks complete --------------------------------------


def _kill_when(proc, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    return False


def test_killing_prepare_mid_write_leaves_no_complete_looking_output(prepared, tmp_path, spark):
    from hvd_otto.app.cli import main

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "prepare.py"), "--train",
         str(prepared / "train.csv"), "--out", str(out), "--row-groups", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "HVD_OTTO_MASTER": "local[1]"})
    staged = lambda: any(p.name.startswith(".out.tmp-") and (p / "train").exists()  # noqa: E731
                         for p in tmp_path.iterdir())
    assert _kill_when(proc, staged, timeout=300), "prepare finished before it could be killed"
    assert not out.exists()  # the final name never appeared
    assert not any((p / "_SUCCESS").exists() for p in tmp_path.iterdir() if p.is_dir())
    # the next run is not confused by the leftover staging folder
    assert main(["prepare", "--train", str(prepared / "train.csv"), "--out", str(out),
                 "--row-groups", "4"]) == 0
    assert (out / "_SUCCESS").exists()


def test_a_half_written_prepared_folder_is_reported(prepared, tmp_path, capsys):
    from hvd_otto.app.cli import main

    half = tmp_path / "half"
    half.mkdir()
    (half / "train").mkdir()
    (half / "metadata.json").write_text("{}")
    assert main(["train", "--data", str(half), "--model", str(tmp_path / "m")]) == 2
    assert "not a complete prepared folder (no _SUCCESS)" in capsys.readouterr().err


# --- safe model loading ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(prepared, tmp_path_factory):
    from hvd_otto.app.cli import main

    model = tmp_path_factory.mktemp("saved") / "model"
    assert main(["train", "--data", str(prepared / "data"), "--model", str(model),
                 "--epochs", "1"]) == 0
    return model


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _keras_file(model: Path) -> Path:
    (path,) = model.glob("stages/*HorovodKerasModel*/model.keras")
    return path


def _corrupt_keras(model: Path) -> None:
    _keras_file(model).write_bytes(b"not a zip file")


def _lambda_layer(model: Path) -> None:
    """A .keras whose config asks for a Lambda layer (arbitrary Python): safe_mode refuses it."""
    import zipfile

    keras_path = _keras_file(model)
    with zipfile.ZipFile(keras_path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1] = {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
            "code": "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARcAUwApAk7pAQAAAKkAKQHaAXhy"
                    "AgAAAHICAAAA+gE8cgMAAAA="}}},
        "build_config": {"input_shape": [None, 12]}}
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(keras_path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def _foreign_metadata(model: Path) -> None:
    meta = next((model / "metadata").glob("part-*"))
    meta.write_text(meta.read_text().replace("PipelineModel", "LogisticRegressionModel"))
    for crc in (model / "metadata").glob(".*.crc"):  # edited by hand: no checksum
        crc.unlink()


def _unfinished(model: Path) -> None:
    (model / "_SUCCESS").unlink()


@pytest.mark.parametrize("name, tamper, message", [
    ("corrupt", _corrupt_keras,
     r"corrupt: a stage could not be loaded: .*model.keras is not a loadable Keras model"),
    ("lambda", _lambda_layer,
     r"lambda: a stage could not be loaded: .*not a loadable Keras model \(.*Lambda"),
    ("foreign", _foreign_metadata, "not a PipelineModel"),
    ("unfinished", _unfinished, "not a complete saved model"),
])
def test_tampered_models_are_refused_with_a_clear_error(saved_model, tmp_path, spark, name,
                                                        tamper, message):
    from hvd_otto.app.scoring import load_model

    assert load_model(spark, str(saved_model)).labels  # the original loads
    copy = _copy(saved_model, tmp_path / name)
    tamper(copy)
    with pytest.raises(InputError, match=message):
        load_model(spark, str(copy))


def test_the_persisted_format_holds_no_pickles(saved_model):
    import zipfile

    for path in saved_model.rglob("*"):
        if path.is_file() and path.suffix not in (".crc",):
            data = path.read_bytes()
            if path.suffix == ".keras":
                with zipfile.ZipFile(path) as z:
                    assert set(z.namelist()) <= {"config.json", "metadata.json",
                                                 "model.weights.h5"}
                continue
            assert not data.startswith(b"\x80"), f"{path} looks like a pickle"
