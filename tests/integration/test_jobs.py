"""The CLI jobs end to end on real Spark and Horovod: train, evaluate, predict, pipeline."""

import json

import pytest


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """prepare → train once (2 ranks, 2 epochs) on a small synthetic CSV, via the CLI."""
    from hvd_otto.app.cli import main
    from hvd_otto.data import synthetic

    base = tmp_path_factory.mktemp("jobs")
    frame = synthetic.generate(rows=1500, seed=9, n_features=10)
    frame.to_csv(base / "train.csv", index=False)
    frame.head(400).to_csv(base / "labelled.csv", index=False)
    frame.drop(columns=["target"]).head(300).to_csv(base / "test.csv", index=False)
    data, model = base / "data", base / "model"
    assert main(["prepare", "--train", str(base / "train.csv"), "--out", str(data),
                 "--row-groups", "4"]) == 0
    assert main(["train", "--data", str(data), "--model", str(model), "--epochs", "2",
                 "--store", str(base / "store")]) == 0
    return base


def test_train_saves_a_pipeline_model_that_scores_raw_csv_columns(trained, spark):
    from hvd_otto.app.scoring import load_model

    model = load_model(spark, str(trained / "model"))
    assert model.labels == [f"Class_{k}" for k in range(1, 10)]
    assert model.label_col == "target" and model.feature_cols == [f"feat_{i}" for i in
                                                                   range(1, 11)]
    assert (trained / "model" / "_SUCCESS").exists()
    assert list((trained / "store" / "runs").glob("*/data")) == []  # the Parquet copy is gone
    history = json.loads(next((trained / "store" / "runs").glob("*/history.json")).read_text())
    splits = json.loads((trained / "data" / "metadata.json").read_text())["splits"]
    # train --data trains on the prepared train split whole and validates on the prepared
    # validation split (not on a fraction held out of train)
    assert sum(history["shard_rows"]) == splits["train"]["rows"]
    assert history["history"][0]["val_loss"] > 0


def test_evaluate_a_labelled_csv_writes_json_and_plots(trained, capsys):
    from hvd_otto.app.cli import main

    out = trained / "evaluation"
    assert main(["evaluate", "--test", str(trained / "labelled.csv"),
                 "--model", str(trained / "model"), "--out", str(out)]) == 0
    figures = json.loads((out / "metrics.json").read_text())
    assert figures["rows"] == 400 and 0 < figures["log_loss"] < 2.2
    assert sum(map(sum, figures["confusion_matrix"])) == 400
    assert set(figures["per_class"]) == {f"Class_{k}" for k in range(1, 10)}
    for png in ("confusion_matrix.png", "learning_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "_SUCCESS").exists()
    capsys.readouterr()
    assert main(["evaluate", "--test", str(trained / "labelled.csv"),
                 "--model", str(trained / "model"), "--out", str(out)]) == 2
    assert "already exists (a complete hvd-otto result); pass --overwrite" in capsys.readouterr().err
    # the prepared validation split scores too (the Keras stage on prepared features)
    assert main(["evaluate", "--data", str(trained / "data"),
                 "--model", str(trained / "model")]) == 0
    assert "log loss" in capsys.readouterr().out


def test_predict_writes_a_kaggle_submission_once(trained, capsys):
    import pandas as pd

    from hvd_otto.app.cli import main

    sub = trained / "submission.csv"
    assert main(["predict", "--test", str(trained / "test.csv"), "--model", str(trained / "model"),
                 "--out", str(sub)]) == 0
    submission = pd.read_csv(sub)
    test = pd.read_csv(trained / "test.csv")
    assert list(submission.columns) == ["id"] + [f"Class_{k}" for k in range(1, 10)]
    assert submission["id"].tolist() == test["id"].tolist()
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-4
    before = sub.read_bytes()
    capsys.readouterr()
    assert main(["predict", "--test", str(trained / "test.csv"), "--model", str(trained / "model"),
                 "--out", str(sub)]) == 2
    err = capsys.readouterr().err
    assert "already exists (a file); pass --overwrite" in err and sub.read_bytes() == before
    assert [p.name for p in trained.iterdir() if p.name.startswith(".submission.csv")] == []
    assert main(["predict", "--test", str(trained / "test.csv"), "--model", str(trained / "model"),
                 "--out", str(sub), "--overwrite"]) == 0  # an earlier submission is replaced
    assert sub.read_bytes() == before
    assert [p.name for p in trained.iterdir() if p.name.startswith(".submission.csv")] == []


BAD_INPUT_CASES = [
    "train: missing CSV", "train: not a prepared folder", "train: existing model",
    "evaluate: not a model", "evaluate: unlabelled file", "evaluate: a label training never saw",
    "predict: other feature columns", "predict: labelled file", "predict: missing model",
    "pipeline: test file with other columns", "demo: a folder that is not an earlier demo",
    "prepare: missing CSV",
]


@pytest.fixture(scope="module")
def bad_inputs(trained):
    cases = _bad_input_cases(trained)
    assert sorted(cases) == sorted(BAD_INPUT_CASES)
    return cases


def _bad_input_cases(base):
    """(arguments, expected words in the one-paragraph error, path that must not appear)."""
    model, labelled, test = base / "model", base / "labelled.csv", base / "test.csv"
    other = base / "other_columns.csv"
    other.write_text("id,feat_1,feat_X\n1,0,0\n")
    unseen = base / "unseen_label.csv"
    lines = labelled.read_text().splitlines()
    unseen.write_text("\n".join([*lines[:4], lines[4].rsplit(",", 1)[0] + ",Class_99"]) + "\n")
    return {
        "train: missing CSV": (["train", "--train", str(base / "nope.csv"), "--model",
                                str(base / "m-new")], ["nope.csv", "not found"], "m-new"),
        "train: not a prepared folder": (["train", "--data", str(base), "--model",
                                          str(base / "m-new")], ["not a complete prepared"],
                                         "m-new"),
        "train: existing model": (["train", "--data", str(base / "data"), "--model", str(model)],
                                  ["already exists", "--overwrite"], None),
        "evaluate: not a model": (["evaluate", "--test", str(labelled), "--model", str(base),
                                   "--out", str(base / "e-new")], ["not a saved Spark model"],
                                  "e-new"),
        "evaluate: unlabelled file": (["evaluate", "--test", str(test), "--model", str(model),
                                       "--out", str(base / "e-new")],
                                      ["test.csv, line 1", "no label column 'target'"], "e-new"),
        "evaluate: a label training never saw": (
            ["evaluate", "--test", str(unseen), "--model", str(model), "--out",
             str(base / "e-new")], ["unseen_label.csv, column 'target'", "'Class_99'",
                                    "first at line 5"], "e-new"),
        "predict: other feature columns": (["predict", "--test", str(other), "--model",
                                            str(model), "--out", str(base / "p-new.csv")],
                                           ["other_columns.csv, line 1", "missing",
                                            "'feat_2'"],
                                           "p-new.csv"),
        "predict: labelled file": (["predict", "--test", str(labelled), "--model", str(model),
                                    "--out", str(base / "p-new.csv")],
                                   ["has a 'target' column"], "p-new.csv"),
        "predict: missing model": (["predict", "--test", str(test), "--model",
                                    str(base / "no-model"), "--out", str(base / "p-new.csv")],
                                   ["no such model folder"], "p-new.csv"),
        "pipeline: test file with other columns": (
            ["pipeline", "--train", str(base / "train.csv"), "--test", str(other), "--out",
             str(base / "pl-new")], ["other_columns.csv, line 1", "missing"], "pl-new"),
        "demo: a folder that is not an earlier demo": (
            ["demo", "--out", str(base / "data")], ["is not the output of an earlier demo",
                                                    "--overwrite"], None),
        "prepare: missing CSV": (["prepare", "--train", str(base / "nope.csv"), "--out",
                                  str(base / "d-new")], ["nope.csv"], "d-new"),
    }


@pytest.mark.parametrize("name", BAD_INPUT_CASES)
def test_every_job_rejects_bad_input_with_one_paragraph_and_no_output(trained, bad_inputs, name,
                                                                       capsys):
    from hvd_otto.app.cli import main

    argv, words, must_not_exist = bad_inputs[name]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    if must_not_exist:
        assert not (trained / must_not_exist).exists()
        assert not list(trained.glob(f".{must_not_exist}*"))  # no staging folder left


def test_pipeline_job_fits_evaluates_saves_and_predicts(spark, tmp_path, capsys):
    from hvd_otto.app.cli import main
    from hvd_otto.app.scoring import load_model
    from hvd_otto.data import synthetic

    frame = synthetic.generate(rows=1500, seed=4, n_features=10)
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.drop(columns=["target"]).head(100).to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "out"
    assert main(["pipeline", "--train", str(tmp_path / "train.csv"), "--test",
                 str(tmp_path / "test.csv"), "--out", str(out), "--epochs", "2", "--mlflow",
                 "--experiment", "jobs-test"]) == 0
    printed = capsys.readouterr().out
    assert not list(out.rglob("*.crc"))  # no Hadoop checksum files beside the outputs
    assert sorted(p.name for p in out.iterdir()) == [
        "_HVD_OTTO", "_SUCCESS", "confusion_matrix.png", "learning_curve.png", "metrics.json",
        "mlruns", "model", "submission.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    _check_pipeline_mlflow_run(out, summary, printed)
    assert summary["job"] == "pipeline" and summary["epochs"] == 2
    assert abs(summary["holdout_figures"]["rows"] - 300) <= 9  # 20% of each class of 1,500
    assert summary["submission_rows"] == 100
    model = load_model(spark, str(out / "model"))
    assert model.keras_stage.getSummary()["num_proc"] == 2
    capsys.readouterr()
    assert main(["pipeline", "--train", str(tmp_path / "train.csv"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def _check_pipeline_mlflow_run(out, summary: dict, printed: str) -> None:
    """--mlflow without a URI: one finished run in the file store OUT/mlruns."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("jobs-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert f"MLflow run {run.info.run_id}" in printed and run.info.status == "FINISHED"
    assert run.data.metrics["holdout_log_loss"] == pytest.approx(
        summary["holdout_figures"]["log_loss"])
    assert run.data.params["numProc"] == "2" and run.data.params["epochs"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == [1, 2]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "confusion_matrix.png", "history.json", "learning_curve.png", "metrics.json", "model",
        "summary.json"}


def test_columns_are_matched_by_name_in_any_order(trained, capsys):
    """A test file with the same columns shuffled, plus one the model never saw, scores the same."""
    import pandas as pd

    from hvd_otto.app.cli import main

    test = pd.read_csv(trained / "test.csv")
    shuffled = test[["id", *reversed([c for c in test.columns if c != "id"])]].assign(extra=3)
    shuffled.to_csv(trained / "shuffled.csv", index=False)
    for name in ("test", "shuffled"):
        assert main(["predict", "--test", str(trained / f"{name}.csv"), "--model",
                     str(trained / "model"), "--out", str(trained / f"by-name-{name}.csv")]) == 0
    assert (trained / "by-name-test.csv").read_text() == \
        (trained / "by-name-shuffled.csv").read_text()


def test_a_zipped_input_leaves_no_temporary_folder(trained, tmp_path):
    import os
    import subprocess
    import sys
    import zipfile

    with zipfile.ZipFile(tmp_path / "test.zip", "w") as archive:
        archive.write(trained / "test.csv", "test.csv")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "hvd_otto.app.cli", "predict", "--test", str(tmp_path / "test.zip"),
         "--model", str(trained / "model"), "--out", str(tmp_path / "submission.csv")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(scratch), "HVD_OTTO_MASTER": "local[1]"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "submission.csv").read_text().splitlines()) == 301
    assert [p.name for p in scratch.iterdir() if p.name.startswith("hvd-otto")] == []
