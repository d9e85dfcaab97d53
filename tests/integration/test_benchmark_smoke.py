"""benchmarks/benchmark.py ingest runs end to end (real Spark) and writes its figures."""

import json
import os
import subprocess
import sys

from helpers import ROOT, synthetic_otto_dir


def test_ingest_benchmark_writes_ratios(tmp_path):
    otto = synthetic_otto_dir(tmp_path / "otto", 3000)
    out = tmp_path / "results.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "ingest", "--otto", str(otto),
         "--master", "local[1]", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(out.read_text())["ingest"]
    assert figures["rows"] == 3000 and figures["ratio_warm_vs_baseline"] > 0
    assert "x baseline" in proc.stdout
    assert list(scratch.iterdir()) == []  # no temporary folder left behind
