"""Hostile and malformed CSV input, as a table of generated cases.

Each case is either handled correctly (the expected rows come through) or rejected with the
file, line, column and reason; with the quarantine policy good + rejected rows always equal the
input's data rows, and nothing is dropped silently.
"""

from __future__ import annotations

import pytest

from hvd_otto import InputError
from hvd_otto.common import fs as store
from hvd_otto.data.csv_source import bad_rows_message, read_csv

HEADER = b"id,feat_1,feat_2,target"

# name: (data lines as bytes, line ending, {line: (column, reason words)} of rejected rows)
CASES = {
    "clean": ([b"1,0,2,Class_1", b"2,3,0,Class_2"], b"\n", {}),
    "truncated last line": ([b"1,0,2,Class_1", b"2,3"], b"", {3: (None, "expected 4 fields, found 2")}),
    "extra field": ([b"1,0,2,Class_1,9", b"2,3,0,Class_2"], b"\n", {2: (None, "found 5")}),
    "missing field": ([b"1,0,Class_1", b"2,3,0,Class_2"], b"\n", {2: (None, "found 3")}),
    "quoted fields with commas": ([b'"a,b",0,2,Class_1', b'"c",1,1,"Class_2"'], b"\n", {}),
    "malformed quoting": ([b'"a,0,2,Class_1', b"2,3,0,Class_2"], b"\n", {2: (None, "malformed quoting")}),
    "CRLF line ends": ([b"1,0,2,Class_1", b"2,3,0,Class_2"], b"\r\n", {}),
    "UTF-8 BOM": ([b"1,0,2,Class_1", b"2,3,0,Class_2"], b"\n", {}),  # BOM added below
    "non-UTF-8 bytes": ([b"1,0,2,Class_1", b"2,\xff3,0,Class_2", b"\xe9t\xe9,1,1,Class_1"],
                        b"\n", {3: (None, "not valid UTF-8"), 4: (None, "not valid UTF-8")}),
    "blank lines": ([b"1,0,2,Class_1", b"", b"   ", b"2,3,0,Class_2"], b"\n", {}),
    "NaN, inf, 1e308": ([b"1,NaN,2,Class_1", b"2,inf,0,Class_2", b"3,1e308,0,Class_2",
                         b"4,1,1,Class_3"], b"\n",
                        {2: ("feat_1", "NaN"), 3: ("feat_1", "infinite"),
                         4: ("feat_1", "out of range")}),
    "negative and non-integer counts": ([b"1,-1,2,Class_1", b"2,0,2.5,Class_2", b"3,1,1,Class_1"],
                                        b"\n", {2: ("feat_1", "negative count"),
                                                3: ("feat_2", "not an integer count")}),
    "duplicate ids": ([b"7,0,2,Class_1", b"8,3,0,Class_2", b"7,1,1,Class_1"], b"\n",
                      {4: ("id", "duplicate id (first at line 2)")}),
    "empty label": ([b"1,0,2,", b"2,3,0,Class_2"], b"\n", {2: ("target", "empty label")}),
    "every row bad": ([b"1,x,2,Class_1", b"2,3,y,Class_2"], b"\n",
                      {2: ("feat_1", "not a number"), 3: ("feat_2", "not a number")}),
}


def _write(tmp_path, name: str, lines: list[bytes], newline: bytes) -> str:
    body = HEADER + (newline or b"\n") + (newline or b"\n").join(lines) + newline
    if name == "UTF-8 BOM":
        body = b"\xef\xbb\xbf" + body
    path = tmp_path / (name.replace(" ", "_").replace(",", "") + ".csv")
    path.write_bytes(body)
    return str(path)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_csv_is_handled_or_rejected_with_line_column_and_reason(spark, tmp_path, name):
    lines, newline, rejected = CASES[name]
    path = _write(tmp_path, name, lines, newline)
    parsed = read_csv(spark, store.to_url(path), path)
    data_rows = sum(1 for line in lines if line.strip())
    good = parsed.good_rows.count()
    assert parsed.total == data_rows and good + parsed.bad == data_rows  # nothing dropped
    bad = {r["_line"]: (r["_column"], r["_reason"]) for r in parsed.bad_rows.collect()}
    assert set(bad) == set(rejected), bad
    raw = {r["_line"]: r["_raw"] for r in parsed.bad_rows.collect()}
    for line, (column, words) in rejected.items():
        assert bad[line][0] == column and words in bad[line][1], (line, bad[line])
        # every rejected row carries its own text, duplicates included
        assert raw[line] == lines[line - 2].decode("utf-8", errors="replace"), raw[line]
    if rejected:
        message = bad_rows_message(parsed)
        first = min(rejected)
        assert path in message and f"line {first}" in message and "quarantine" in message
        if rejected[first][0]:
            assert f"column '{rejected[first][0]}'" in message
    if name == "quoted fields with commas":
        assert sorted(r["id"] for r in parsed.good_rows.collect()) == ["a,b", "c"]
    if name == "UTF-8 BOM":
        assert parsed.schema.id_col == "id" and good == 2
    parsed.rows.unpersist()


def test_duplicate_header_names_are_a_header_error(spark, tmp_path):
    path = tmp_path / "dup_header.csv"
    path.write_bytes(b"id,feat_1,feat_1,target\n1,0,2,Class_1\n")
    with pytest.raises(InputError, match=r"dup_header.csv, line 1 \(header\): duplicate column "
                                         r"name 'feat_1' \(columns 2 and 3\)"):
        read_csv(spark, store.to_url(str(path)), str(path))


def test_a_file_where_every_row_is_bad_stops_even_under_quarantine(spark, tmp_path):
    from hvd_otto import prepare

    lines, newline, _ = CASES["every row bad"]
    path = _write(tmp_path, "every row bad", lines, newline)
    with pytest.raises(InputError, match=r"every row is bad \(2 of 2\)"):
        prepare(spark, path, str(tmp_path / "out"), bad_rows="quarantine", row_groups=2)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_quarantine_keeps_good_plus_rejected_equal_to_the_input(spark, tmp_path):
    """One prepare with quarantine over a file mixing several hostile rows."""
    import csv
    import json

    from hvd_otto import prepare

    good = [f"{i},{i % 3},{i % 5},Class_{1 + i % 2}".encode() for i in range(1, 41)]
    hostile = [b"41,NaN,1,Class_1", b"42,1", b"7,1,1,Class_2", b"43,\xff,1,Class_1",
               b"44,1,1,", b"45,-2,0,Class_1"]
    path = _write(tmp_path, "mixed", good + hostile, b"\r\n")
    result = prepare(spark, path, str(tmp_path / "out"), bad_rows="quarantine", row_groups=2,
                     validation=0.25)
    meta = result.metadata
    kept = sum(split["rows"] for split in meta["splits"].values())
    assert kept == 40 and sum(meta["rejected_rows"].values()) == 6
    (rejected_csv,) = (tmp_path / "out" / "rejected" / "train").glob("part-*.csv")
    rows = list(csv.DictReader(rejected_csv.open(encoding="utf-8")))
    assert sorted(int(r["line"]) for r in rows) == list(range(42, 48))
    assert all(r["reason"] for r in rows)
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["input_rows"] == 46
