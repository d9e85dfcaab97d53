"""A wrong worker Python is one clear paragraph within seconds, before any data or rank.

Two real setups: the seed flow in the user's own script, with workers whose Python has the
ingestion modules but not Horovod; and the CLI with PYSPARK_PYTHON naming a bare interpreter.
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hvd_otto.data import synthetic

SEED_FLOW = textwrap.dedent("""
    import sys
    from pyspark.ml import Pipeline
    from pyspark.sql import SparkSession
    from hvd_otto import HorovodKerasEstimator, InputError, build_preprocessing, load_csv

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .getOrCreate())
    df = load_csv(spark, sys.argv[1])
    features = [c for c in df.columns if c.startswith("feat_")]
    stages = build_preprocessing(features, "target").getStages()
    try:
        Pipeline(stages=[*stages, HorovodKerasEstimator(epochs=1)]).fit(df)
    except InputError as err:
        print("INPUT ERROR:", err)
        sys.exit(2)
""")


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preflight") / "train.csv"
    synthetic.generate(300, seed=2, n_features=6).to_csv(path, index=False)
    return path


def python_without_horovod(folder: Path) -> Path:
    """This venv's Python, with 'horovod' hidden from imports (a sitecustomize finder)."""
    hide = folder / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys

        class HideHorovod:
            def find_spec(self, name, path=None, target=None):
                if name == "horovod" or name.startswith("horovod."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, HideHorovod())
    """))
    (folder / "bin").mkdir()
    wrapper = folder / "bin" / "python3"  # what Spark runs when PYSPARK_PYTHON is unset
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{hide}:$PYTHONPATH" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_seed_flow_with_workers_lacking_horovod_fails_fast_naming_the_setting(small_csv,
                                                                              tmp_path):
    """The user builds the session; PYSPARK_PYTHON is unset, so workers run 'python3' from
    PATH, which here has everything but Horovod."""
    python3 = python_without_horovod(tmp_path)
    script = tmp_path / "seed.py"
    script.write_text(SEED_FLOW)
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON",
                                                            "PYSPARK_DRIVER_PYTHON")}
    env["PATH"] = f"{python3.parent}:{env['PATH']}"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), str(small_csv)],
                          capture_output=True, text=True, timeout=300, env=env)
    seconds = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "INPUT ERROR: Spark's Python workers cannot run hvd-otto" in proc.stdout
    assert "lacks horovod." in proc.stdout  # the ingestion modules are there
    assert "PYSPARK_PYTHON is not set, so 'python3' from the PATH" in proc.stdout
    assert "at org.apache" not in out and "Traceback" not in out
    assert "rank 0" not in out  # no rank was launched
    assert seconds < 120, seconds


def test_cli_with_a_bare_worker_interpreter_exits_2_within_seconds(small_csv, tmp_path):
    bare = Path("/usr/bin/python3")
    if not bare.exists():
        pytest.skip("no system python3 without the stack here")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hvd_otto.app.cli", "train", "--train", str(small_csv),
         "--model", str(tmp_path / "model"), "--epochs", "1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": str(bare), "HVD_OTTO_MASTER": "local[1]"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "at org.apache" not in proc.stderr
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert err.startswith("error: Spark's Python workers cannot run hvd-otto: they run "
                          f"{bare} (Python 3.11")
    assert f"PYSPARK_PYTHON={bare}" in err and "lacks numpy, pandas, pyarrow" in err
    assert not (tmp_path / "model").exists()
    assert time.monotonic() - started < 120
