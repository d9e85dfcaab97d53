"""Ingestion on a real local Spark: validation, quarantine, the real Otto file, Petastorm reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import OTTO_CLASS_COUNTS, write_csv

from hvd_otto import InputError, prepare
from hvd_otto.data import synthetic

HEADER = "id,f1,f2,f3,target"
GOOD = [f"{i},{i % 3},{i % 5},{i % 2},{'AB'[i % 2]}" for i in range(1, 41)]


def read_parquet_rows(spark, path):
    return spark.read.parquet(str(path)).count()


def assert_no_output(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


@pytest.mark.parametrize(
    "bad_line, position, expected",
    [
        ("17,1,x,0,A", 9, "line 9, column 'f2': not a number ('x')"),
        ("17,1,2,A", 5, "line 5: expected 5 fields, found 4"),
        ("17,1,2,0,", 30, "line 30, column 'target': empty label"),
        ("17,-1,2,0,A", 12, "line 12, column 'f1': negative count ('-1')"),
        ("17,1,inf,0,A", 3, "line 3, column 'f2': infinite ('inf')"),
        ("17,1,2,nan,A", 41, "line 41, column 'f3': NaN ('nan')"),
    ],
)
def test_fail_policy_names_file_line_column_and_count(spark, tmp_path, bad_line, position, expected):
    rows = list(GOOD)
    rows.insert(position - 2, bad_line)  # line 1 is the header
    csv = write_csv(tmp_path / "bad.csv", HEADER, rows)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        prepare(spark, csv, str(out), row_groups=2)
    message = str(err.value)
    assert message.startswith(f"{csv}: 1 bad row(s) out of 41")
    assert expected in message
    assert "--bad-rows quarantine" in message
    assert_no_output(out)


def test_fail_policy_lists_the_first_ten_and_the_total(spark, tmp_path):
    rows = [f"{i},1,x,0,A" if i % 2 else f"{i},1,1,0,B" for i in range(1, 61)]
    csv = write_csv(tmp_path / "many.csv", HEADER, rows)
    with pytest.raises(InputError) as err:
        prepare(spark, csv, str(tmp_path / "out"))
    lines = str(err.value).splitlines()
    assert "30 bad row(s) out of 60 (first 10 shown)" in lines[0]
    assert [ln.split(",")[0].strip() for ln in lines[1:11]] == [
        f"line {n}" for n in range(2, 22, 2)
    ]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "the file is empty"),
        ("id,f1,target\n", "has a header but no data rows"),
        ("f1,f2,target\n1,2,A\n", "line 1 (header): no id column 'id'"),
        ("id,f1,f1,target\n1,2,3,A\n", "duplicate column name 'f1'"),
        ("id,f1,f2\n1,2,3\n", "no label column 'target'"),
    ],
)
def test_file_level_errors_are_clear(spark, tmp_path, content, expected):
    path = tmp_path / "input.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        prepare(spark, str(path), str(tmp_path / "out"))
    assert_no_output(tmp_path / "out")


def test_missing_file_and_folder(spark, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        prepare(spark, str(tmp_path / "nope.csv"), str(tmp_path / "out"))
    with pytest.raises(InputError, match="is a folder"):
        prepare(spark, str(tmp_path), str(tmp_path / "out"))


def test_quarantine_accounts_for_every_row(spark, tmp_path):
    rows = list(GOOD)
    bad = {3: "9,1,x,0,A", 7: "9,1,2,A", 11: "9,1,2,0,", 20: "9,1.5,2,0,B"}
    for position in sorted(bad):
        rows.insert(position - 2, bad[position])
    rows.insert(15, "")  # a blank line: not a row, but it shifts line numbers
    csv = write_csv(tmp_path / "mixed.csv", HEADER, rows, newline="\r\n")
    out = tmp_path / "out"
    result = prepare(spark, csv, str(out), bad_rows="quarantine", row_groups=2)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta == result.metadata
    good = meta["splits"]["train"]["rows"] + meta["splits"]["validation"]["rows"]
    assert meta["rejected_rows"]["train"] == 4
    assert good + 4 == meta["input_rows"] == 44
    rejected = spark.read.option("header", True).csv(str(out / "rejected" / "train"))
    by_line = {int(r["line"]): (r["column"], r["reason"]) for r in rejected.collect()}
    assert by_line == {
        3: ("f2", "not a number ('x')"),
        7: (None, "expected 5 fields, found 4"),
        11: ("target", "empty label"),
        21: ("f1", "not an integer count ('1.5')"),
    }
    assert (out / "_SUCCESS").exists()


def test_existing_output_is_kept_unless_overwrite(spark, tmp_path):
    csv = write_csv(tmp_path / "ok.csv", HEADER, GOOD)
    out = tmp_path / "out"
    prepare(spark, csv, str(out), row_groups=2)
    marker = out / "train" / "_SUCCESS"
    with pytest.raises(InputError, match="already exists .*--overwrite"):
        prepare(spark, csv, str(out))
    assert marker.exists()
    prepare(spark, csv, str(out), overwrite=True, row_groups=3)
    assert json.loads((out / "metadata.json").read_text())["row_groups"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_other_shapes_go_through_unchanged_code(spark, tmp_path):
    frame = synthetic.generate(rows=3000, seed=3, n_features=20, class_counts=(5, 3, 2, 1))
    frame = frame.rename(columns={"id": "row_key", "target": "kind"})
    frame["kind"] = frame["kind"].map(
        {"Class_1": "zebra", "Class_2": "apple", "Class_3": "mango", "Class_4": "kiwi"})
    path = tmp_path / "other.csv.gz"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    meta = prepare(spark, str(path), str(out), id_col="row_key", label_col="kind",
                   row_groups=4).metadata
    assert meta["labels"] == ["apple", "kiwi", "mango", "zebra"]
    assert len(meta["feature_cols"]) == 20 and meta["input_rows"] == 3000
    row = spark.read.parquet(str(out / "train")).first()
    assert len(row["features"]) == 20 and 0 <= row["label"] <= 3


def test_same_seed_same_split_and_data(spark, tmp_path):
    a, b = synthetic.generate(2000, seed=5), synthetic.generate(2000, seed=5)
    assert a.equals(b) and not a.equals(synthetic.generate(2000, seed=6))
    path = tmp_path / "s.csv"
    a.to_csv(path, index=False)
    ids = []
    for run in ("one", "two"):
        prepare(spark, str(path), str(tmp_path / run), seed=11, row_groups=3)
        ids.append(sorted(r["id"] for r in spark.read.parquet(str(tmp_path / run / "validation"))
                          .select("id").collect()))
    assert ids[0] == ids[1] and abs(len(ids[0]) - 400) <= 9  # rounding per class


def test_stratified_split_takes_each_class_first_rows_by_seeded_hash(spark):
    """Validation = per class, the first round(n * fraction) rows ordered by
    (xxhash64(seed, line), line), rounding half up; a class too small gets none."""
    import pandas as pd
    from pyspark.sql import functions as F

    from hvd_otto.data.prepare import stratified_split

    labels = ["A"] * 10 + ["B"] * 37 + ["C"]  # 2.5 → 3, 9.25 → 9, 0.25 → 0 validation rows
    lines = [int(n) for n in np.arange(2, 2 + len(labels)) * 3]
    df = spark.createDataFrame(pd.DataFrame({"_line": lines, "target": labels,
                                             "x": np.arange(len(labels), dtype=float)}))
    train, val = stratified_split(df, "target", 0.25, seed=9)
    keys = df.select("_line", "target", F.xxhash64(F.lit(9), F.col("_line")).alias("h")).toPandas()
    want = set()
    for _, group in keys.groupby("target"):
        take = int(np.floor(len(group) * 0.25 + 0.5))
        want |= set(group.sort_values(["h", "_line"])["_line"].iloc[:take])
    got_val = [r["_line"] for r in val.collect()]
    got_train = [r["_line"] for r in train.collect()]
    assert len(want) == 12 and sorted(got_val) == sorted(want)
    assert sorted(got_train) == sorted(set(lines) - want)
    assert train.columns == val.columns == df.columns


# --- the real Otto file (prepared once for the module) ---------------------------------------


@pytest.fixture(scope="module")
def otto_prepared(spark, otto_train, tmp_path_factory):
    out = tmp_path_factory.mktemp("otto") / "prepared"
    result = prepare(spark, str(otto_train), str(out))
    return out, result.metadata


def test_real_otto_counts_and_mapping(otto_prepared):
    _, meta = otto_prepared
    assert meta["input_rows"] == 61878 and meta["rejected_rows"] == {"train": 0}
    assert meta["label_mapping"]["Class_1"] == 0 and meta["label_mapping"]["Class_9"] == 8
    assert len(meta["feature_cols"]) == 93 and "id" not in meta["feature_cols"]
    totals = [meta["splits"]["train"]["class_counts"][f"Class_{k}"]
              + meta["splits"]["validation"]["class_counts"][f"Class_{k}"] for k in range(1, 10)]
    assert totals == OTTO_CLASS_COUNTS
    val = meta["splits"]["validation"]["class_counts"]
    assert all(abs(val[f"Class_{k}"] - 0.2 * n) <= 1 for k, n in zip(range(1, 10), totals))


def test_real_otto_scaled_training_features(spark, otto_prepared):
    out, _ = otto_prepared
    frame = spark.read.parquet(str(out / "train"))
    assert dict(frame.dtypes) == {"id": "string", "features": "array<float>", "label": "int"}
    x = np.stack(frame.toPandas()["features"].to_numpy())
    assert x.shape == (49502, 93)
    assert np.abs(x.mean(axis=0)).max() < 1e-3
    assert np.abs(x.std(axis=0) - 1).max() < 1e-3


def test_petastorm_reads_balanced_shards_without_loss(otto_prepared):
    from hvd_otto.rank.shards import read_shard

    out, meta = otto_prepared
    for _ in range(3):  # Petastorm's thread pool lost row groups now and then: read repeatedly
        shards = [read_shard(f"file://{out}/train", shard, 2, ("id", "features", "label"))
                  for shard in range(2)]
        for shard in shards:
            assert shard["features"].dtype == np.float32 and shard["features"].shape[1] == 93
            assert shard["label"].dtype == np.int32
        ids = np.concatenate([s["id"] for s in shards])
        sizes = [len(s["label"]) for s in shards]
        assert sum(sizes) == meta["splits"]["train"]["rows"] == len(set(ids))
        assert abs(sizes[0] - sizes[1]) <= 24
