"""Library Spark defaults fill only what the user left unset (no JVM)."""

import pytest

from hvd_otto.app.session import (
    DEFAULT_CONF,
    confs_to_apply,
    parse_defaults_file,
    parse_submit_args,
    stop_spark,
    user_conf,
)


def test_user_confs_are_never_overridden():
    user = {"spark.sql.shuffle.partitions": "200", "spark.ui.enabled": "true"}
    chosen = confs_to_apply(user, "local[2]")
    assert "spark.sql.shuffle.partitions" not in chosen and "spark.ui.enabled" not in chosen
    assert chosen["spark.sql.execution.arrow.pyspark.enabled"] == "true"


@pytest.mark.parametrize("master, ui_off", [("local[*]", True), ("spark://h:7077", False),
                                            ("yarn", False), ("k8s://x", False)])
def test_the_ui_is_turned_off_only_for_local_runs(master, ui_off):
    assert (confs_to_apply({}, master).get("spark.ui.enabled") == "false") is ui_off


def test_driver_memory_is_a_default_only_when_we_start_the_jvm():
    assert "spark.driver.memory" in confs_to_apply({}, "local[2]", launching_jvm=True)
    assert "spark.driver.memory" not in confs_to_apply({}, "yarn", launching_jvm=False)
    assert "spark.driver.memory" not in confs_to_apply({"spark.driver.memory": "1g"}, "local")


def test_explicit_options_apply_and_spark_files_are_appended():
    chosen = confs_to_apply({"spark.files": "a.py", "spark.executor.resource.gpu.amount": "2"},
                            "yarn", {"spark.files": "gpu.sh",
                                     "spark.executor.resource.gpu.amount": "4"}, False)
    assert chosen["spark.files"] == "a.py,gpu.sh"
    assert chosen["spark.executor.resource.gpu.amount"] == "4"  # --executor-gpus was typed
    assert set(DEFAULT_CONF) <= set(chosen)


def test_spark_defaults_file_and_submit_args_are_read():
    text = "# comment\nspark.a   1\nspark.b=2\nspark.c: three words\n! also a comment\n\n"
    assert parse_defaults_file(text) == {"spark.a": "1", "spark.b": "2",
                                         "spark.c": "three words"}
    assert parse_submit_args("--master 'local[3]' --conf spark.x=1 -c spark.y=a=b pyspark-shell"
                             ) == {"spark.master": "local[3]", "spark.x": "1", "spark.y": "a=b"}


def test_user_conf_reads_spark_conf_dir_and_submit_args(tmp_path, monkeypatch):
    (tmp_path / "spark-defaults.conf").write_text("spark.sql.shuffle.partitions 64\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--conf spark.ui.enabled=true pyspark-shell")
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    conf = user_conf()
    assert conf == {"spark.sql.shuffle.partitions": "64", "spark.ui.enabled": "true"}
    assert "spark.ui.enabled" not in confs_to_apply(conf, "local[2]")



class _FakeContext:
    """A SparkContext stand-in whose gateway process is a real child reading its stdin."""

    def __init__(self, proc):
        self._gateway = type("Gateway", (), {"proc": proc})()
        self.stopped = False

    def stop(self):
        self.stopped = True


def test_stop_spark_waits_for_the_jvm_it_started_so_its_output_comes_first(monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    code = "import sys, time; sys.stdin.read(); time.sleep(0.3); print('last words')"
    child = subprocess.Popen([sys.executable, "-c", code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sc = _FakeContext(child)
    stop_spark(sc, timeout=30)
    assert sc.stopped and child.returncode == 0  # exited at EOF, and was waited for
    assert child.stdout.read() == "last words\n"


def test_stop_spark_leaves_a_spark_submit_jvm_alone(monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        sc = _FakeContext(child)
        stop_spark(sc, timeout=1)
        assert sc.stopped and child.poll() is None
    finally:
        child.kill()
        child.wait()
