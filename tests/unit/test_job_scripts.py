"""The spark-submit entry points in jobs/ parse their options; the packaged GPU discovery script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
DISCOVERY = ROOT / "hvd_otto" / "app" / "gpu_discovery.sh"


@pytest.mark.parametrize("job", ["prepare", "train", "evaluate", "predict", "pipeline", "doctor"])
def test_job_scripts_show_help(job):
    out = subprocess.run([sys.executable, str(JOBS / f"{job}.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"hvd-otto {job}" in out.stdout


def test_gpu_discovery_reports_nvidia_smi_indices(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n 1\\n'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(DISCOVERY)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": ["0", "1"]}


def test_gpu_discovery_without_gpus_reports_none(tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["bash", str(DISCOVERY)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": []}


