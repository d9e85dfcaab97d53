"""The CSV contract without Spark: header roles and per-row validation."""

import numpy as np
import pytest

from hvd_otto.data.schema import InputError, parse_rows, schema_from_header, split_header_line


def schema(header="id,f1,f2,target", **kw):
    return schema_from_header(split_header_line(header), "data.csv", **kw)


def test_roles_come_from_the_header_not_from_otto():
    s = schema("\ufeffkey,a,b,c,cls\r\n", id_col="key", label_col="cls")
    assert s.feature_cols == ("a", "b", "c") and s.id_col == "key" and s.label_col == "cls"


def test_test_file_without_label_is_accepted_when_not_required():
    s = schema("id,f1,f2", require_label=False)
    assert s.label_col is None and s.feature_cols == ("f1", "f2")


@pytest.mark.parametrize(
    "header, kwargs, expected",
    [
        ("f1,f2,target", {}, "no id column 'id'"),
        ("id,f1,f2", {}, "no label column 'target'"),
        ("id,f1,f1,target", {}, "duplicate column name 'f1' (columns 2 and 3)"),
        ("id,target", {}, "no feature columns"),
        ("id,,f2,target", {}, "column(s) [2] have no name"),
    ],
)
def test_header_errors_name_file_line_and_column(header, kwargs, expected):
    with pytest.raises(InputError) as err:
        schema(header, **kwargs)
    assert "data.csv, line 1 (header)" in str(err.value)
    assert expected in str(err.value)


CASES = [
    ("7,1,2,A", None, None),
    ("7,x,2,A", "f1", "not a number ('x')"),
    ("7,1,nan,A", "f2", "NaN ('nan')"),
    ("7,inf,2,A", "f1", "infinite ('inf')"),
    ("7,1e308,2,A", "f1", "out of range ('1e308')"),
    ("7,1,-3,A", "f2", "negative count ('-3')"),
    ("7,1.5,2,A", "f1", "not an integer count ('1.5')"),
    ("7,1,2,", "target", "empty label"),
    (",1,2,A", "id", "empty id"),
    ("7,1,2", None, "expected 4 fields, found 3"),
    ("7,1,2,A,9", None, "expected 4 fields, found 5"),
    ('7,1,2,"A,B"', None, None),
]


@pytest.mark.parametrize("line, column, reason", CASES)
def test_each_row_problem_is_found_with_its_column(line, column, reason):
    out = parse_rows([line], [5], schema())
    assert out["_line"].tolist() == [5]
    assert out["_column"].iloc[0] == column
    assert out["_reason"].iloc[0] == reason
    if reason is None:
        assert out["f1"].iloc[0] == 1.0 and out["_raw"].iloc[0] is None
    else:
        assert np.isnan(out["f1"].iloc[0]) and out["_raw"].iloc[0] == line


def test_blank_lines_are_skipped_and_line_numbers_kept():
    out = parse_rows(["1,1,1,A", "", "   ", "2,x,1,B"], [2, 3, 4, 5], schema())
    assert out["_line"].tolist() == [2, 5]
    assert out["_reason"].tolist() == [None, "not a number ('x')"]


def test_feature_columns_are_matched_by_name():

    from hvd_otto.data.csv_source import check_feature_columns

    check_feature_columns("t.csv", ["f2", "f1"], ["f1", "f2"])  # any order
    with pytest.raises(InputError, match=r"t.csv, line 1 \(header\): feature column\(s\) of the "
                                         r"training file missing: \['f2'\] \(1 of 2\)"):
        check_feature_columns("t.csv", ["f1", "f3"], ["f1", "f2"])


def test_extra_columns_are_ignored_with_a_warning(caplog):
    import logging

    from hvd_otto.data.csv_source import check_feature_columns

    with caplog.at_level(logging.WARNING, logger="hvd_otto"):
        check_feature_columns("t.csv", ["f1", "note", "f2"], ["f1", "f2"])
    assert "ignoring 1 column(s) the model was not trained on: ['note']" in caplog.text


# --- The native fast path and the pipeline read_csv runs per batch ------------------------------

CLEAN = [b"1,0,2,Class_1", b"2,3,0,Class_2", b"3,1e3,17,Class_1", b"4,3e38,1.0,Class_9"]

# name: one line mixed into a clean batch; the fast path must decline the whole batch
ANOMALIES = {
    "space before id": b" 5,0,2,Class_1",
    "space after id": b"5 ,0,2,Class_1",
    "whitespace-only id": b"  ,0,2,Class_1",
    "space around label": b"5,0,2, Class_1 ",
    "space in a feature": b"5, 1,2,Class_1",
    "tab": b"5,0,2,Class_1\t",
    "empty id": b",0,2,Class_1",
    "empty label": b"5,0,2,",
    "empty feature": b"5,,2,Class_1",
    "nan": b"5,nan,2,Class_1",
    "NaN": b"5,1,NaN,Class_1",
    "NA": b"5,NA,2,Class_1",
    "N/A and null": b"5,N/A,null,Class_1",
    "inf": b"5,inf,2,Class_1",
    "-inf": b"5,1,-inf,Class_1",
    "negative": b"5,-1,2,Class_1",
    "fractional": b"5,1.5,2,Class_1",
    "1e39": b"5,1e39,2,Class_1",
    "not a number": b"5,x,2,Class_1",
    "quoted id": b'"5",0,2,Class_1',
    "quoted comma": b'"5,6",0,2,Class_1',
    "malformed quoting": b'"5,0,2,Class_1',
    "UTF-8 BOM": b"\xef\xbb\xbf5,0,2,Class_1",
    "too few fields": b"5,0,2",
    "too many fields": b"5,0,2,Class_1,9",
    "blank line": b"",
    "whitespace line": b"   ",
    "non-UTF-8 byte": b"5,\xff3,0,Class_1",
    "Latin-1 id": b"\xe9t\xe9,1,1,Class_1",
    "U+FFFD in the text": "5,0,2,Class_\ufffd".encode(),
    "non-ASCII label": "5,0,2,Klasse_ä".encode(),
    "CRLF": b"5,0,2,Class_1\r",
    "line with a newline": b"5,0\n,2,Class_1",
}


def _numbers(lines, first=2):
    return list(range(first, first + len(lines)))


def _reference(lines, numbers, s):
    return parse_rows([v.decode("utf-8", errors="replace") for v in lines], numbers, s)


def test_fast_path_is_taken_on_clean_batches_and_equals_parse_rows():
    from pandas.testing import assert_frame_equal

    from hvd_otto.data.schema import arrow_schema, parse_lines, parse_rows_fast

    s = schema("id,f1,f2,target")
    numbers = _numbers(CLEAN, first=9)
    fast = parse_rows_fast(b"\n".join(CLEAN), numbers, s)
    assert fast is not None and fast.schema == arrow_schema(s)
    assert_frame_equal(fast.to_pandas(), _reference(CLEAN, numbers, s))
    assert fast["f1"].to_pylist() == [0.0, 3.0, 1000.0, 3e38] and fast["_line"][0].as_py() == 9
    assert_frame_equal(parse_lines(CLEAN, numbers, s).to_pandas(), _reference(CLEAN, numbers, s))


def test_fast_path_on_a_file_without_label_and_with_other_roles():
    from pandas.testing import assert_frame_equal

    from hvd_otto.data.schema import parse_rows_fast

    s = schema("a,key,b", id_col="key", require_label=False)
    lines = [b"1,k1,2", b"0,k2,5"]
    fast = parse_rows_fast(b"\n".join(lines), [2, 3], s)
    assert fast is not None and fast.column_names[:2] == ["_line", "key"]
    assert_frame_equal(fast.to_pandas(), _reference(lines, [2, 3], s))


@pytest.mark.parametrize("name", list(ANOMALIES))
def test_fast_path_declines_every_anomaly_and_the_pipeline_equals_parse_rows(name):
    from pandas.testing import assert_frame_equal

    from hvd_otto.data.schema import arrow_schema, parse_lines, parse_rows_fast

    s = schema("id,f1,f2,target")
    lines = CLEAN[:2] + [ANOMALIES[name]] + CLEAN[2:]
    numbers = _numbers(lines)
    assert parse_rows_fast(b"\n".join(lines), numbers, s) is None
    out = parse_lines(lines, numbers, s)
    assert out.schema == arrow_schema(s)  # what mapInArrow declares, on the fallback too
    assert_frame_equal(out.to_pandas(), _reference(lines, numbers, s))


def test_a_batch_without_data_lines_gives_an_empty_table_of_the_right_schema():
    from hvd_otto.data.schema import arrow_schema, parse_lines

    s = schema("id,f1,f2,target")
    out = parse_lines([], [], s)
    assert out.num_rows == 0 and out.schema == arrow_schema(s)


@pytest.mark.parametrize("spelling", [b"+1", b"0010", b"-0", b"1E+2", b"5.", b".5e1", b"1_0",
                                      b"0x10", b"1e-400", b"Infinity", b"2.0000000000000001"])
def test_number_spellings_get_the_same_verdict_and_value_on_either_path(spelling):
    from pandas.testing import assert_frame_equal

    from hvd_otto.data.schema import parse_lines

    s = schema("id,f1,f2,target")
    lines = [*CLEAN, b"5," + spelling + b",2,Class_1"]
    numbers = _numbers(lines)
    assert_frame_equal(parse_lines(lines, numbers, s).to_pandas(),
                       _reference(lines, numbers, s))


def test_numbered_counts_lines_per_block_across_batches():
    import pyarrow as pa

    from hvd_otto.data.csv_source import numbered

    def batch(blocks):
        return pa.RecordBatch.from_arrays([pa.array(blocks, pa.int64()),
                                           pa.array([b"x"] * len(blocks))], ["_block", "value"])

    got = [n.tolist() for _, n in numbered([batch([0, 0, 0, 700]), batch([700, 0, 700])],
                                           {0: 1, 700: 40})]
    assert got == [[1, 2, 3, 40], [41, 4, 42]]
