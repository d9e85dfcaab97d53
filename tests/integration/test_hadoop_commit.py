"""The commit through Hadoop's FileContext (the path taken on hdfs://, s3a://), run on file://."""

import pytest

from hvd_otto.common import commit as committing
from hvd_otto.common import fs as store


def test_hadoop_no_replace_rename_and_commit(spark, tmp_path):
    fs = store.HadoopFs(spark)
    src, dst = tmp_path / "staged", tmp_path / "out"
    src.mkdir()
    (src / "result.txt").write_text("new")
    (src / committing.MARKER).write_text("{}")
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("important")

    assert fs.move_no_replace(store.to_url(str(src)), store.to_url(str(dst)))
    assert (dst / "result.txt").read_text() == "new" and not src.exists()
    assert not fs.move_no_replace(store.to_url(str(dst)), store.to_url(str(other)))
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt"]  # not moved into it
    assert not fs.move(store.to_url(str(tmp_path / "absent")), store.to_url(str(tmp_path / "x")))
    assert fs.first_line(store.to_url(str(dst / "result.txt"))) == "new"

    # the whole commit with Hadoop's operations: a conflicting target is left as it is
    staged = tmp_path / "staged2"
    staged.mkdir()
    (staged / committing.MARKER).write_text("{}")
    with pytest.raises(committing.OutputConflict) as caught:
        committing.commit(fs, store.to_url(str(staged)), store.to_url(str(other)), False)
    assert "not-committed" in caught.value.kept
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt"]
    committing.commit(fs, caught.value.kept, store.to_url(str(dst)), True)  # ours: replaced
    assert sorted(p.name for p in dst.iterdir()) == [committing.MARKER]
