"""The benchmark script without Spark: its baseline and its refusal of a missing data folder."""

import pyarrow.parquet as pq
from helpers import load_benchmark, synthetic_otto_dir


def test_missing_otto_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HVD_OTTO_DATA", raising=False)
    bench = load_benchmark()
    assert bench.main(["ingest"]) == 2
    assert "pass --otto DIR or set HVD_OTTO_DATA" in capsys.readouterr().err
    assert bench.main(["train", "--otto", str(tmp_path)]) == 2


def test_the_pyarrow_baseline_splits_scales_and_writes_parquet(tmp_path):
    otto = synthetic_otto_dir(tmp_path / "otto", 900)
    rows = load_benchmark().baseline_prepare(str(otto / "train.csv.zip"), str(tmp_path / "out"))
    train = pq.read_table(tmp_path / "out" / "train")
    validation = pq.read_table(tmp_path / "out" / "validation")
    assert rows == 900 and train.num_rows + validation.num_rows == 900
    assert abs(validation.num_rows - 180) <= 9  # 20 %, rounded per class
    features = train.column("features").combine_chunks().flatten().to_numpy()
    assert abs(features.mean()) < 0.05  # standard-scaled on the training split
    assert train.schema.field("label").type == "int32"
