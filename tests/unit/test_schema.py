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
