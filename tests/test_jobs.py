"""The spark-submit entry points in jobs/ and the GPU discovery script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize("job", ["prepare", "train", "evaluate", "predict"])
def test_job_scripts_show_help(job):
    out = subprocess.run([sys.executable, str(JOBS / f"{job}.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"hvd-otto {job}" in out.stdout


def test_gpu_discovery_reports_nvidia_smi_indices(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n 1\\n'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(JOBS / "gpu_discovery.sh")], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": ["0", "1"]}


def test_gpu_discovery_without_gpus_reports_none(tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["bash", str(JOBS / "gpu_discovery.sh")], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": []}


def test_cli_prepare_train_evaluate_predict_end_to_end(spark, tmp_path, capsys):
    import pandas as pd

    from hvd_otto import synthetic
    from hvd_otto.cli import main

    frame = synthetic.generate(rows=1500, seed=9, n_features=10)
    frame.to_csv(tmp_path / "train.csv", index=False)
    test = frame.drop(columns=["target"]).head(300)
    test.to_csv(tmp_path / "test.csv", index=False)
    data, model, sub = tmp_path / "data", tmp_path / "model", tmp_path / "submission.csv"
    assert main(["prepare", "--train", str(tmp_path / "train.csv"), "--out", str(data),
                 "--row-groups", "4"]) == 0
    assert main(["train", "--data", str(data), "--model", str(model), "--epochs", "2",
                 "--store", str(tmp_path / "store")]) == 0
    assert main(["evaluate", "--data", str(data), "--model", str(model),
                 "--out", str(tmp_path / "metrics.json")]) == 0
    figures = json.loads((tmp_path / "metrics.json").read_text())
    assert abs(figures["rows"] - 300) <= 9 and 0 < figures["log_loss"] < 2.2  # 20% of 1,500
    for png in ("confusion_matrix.png", "learning_curve.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["predict", "--test", str(tmp_path / "test.csv"), "--data", str(data),
                 "--model", str(model), "--out", str(sub)]) == 0
    submission = pd.read_csv(sub)
    assert list(submission.columns) == ["id"] + [f"Class_{k}" for k in range(1, 10)]
    assert submission["id"].tolist() == test["id"].tolist()
    assert (submission.iloc[:, 1:].sum(axis=1) - 1).abs().max() < 1e-4
    capsys.readouterr()
    assert main(["predict", "--test", str(tmp_path / "test.csv"), "--data", str(data),
                 "--model", str(model), "--out", str(sub)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--model", str(tmp_path / "m2")]) == 2
