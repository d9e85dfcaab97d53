"""Every option is checked by the parser, with the CLI's own names, before any Spark work."""

import pytest

from hvd_otto.app.cli import build_parser

BASE = {
    "train": ["train", "--data", "d", "--model", "m"],
    "pipeline": ["pipeline", "--train", "t.csv", "--out", "o"],
    "prepare": ["prepare", "--train", "t.csv", "--out", "o"],
    "evaluate": ["evaluate", "--data", "d", "--model", "m"],
}


@pytest.mark.parametrize("command, extra, message", [
    ("train", ["--num-proc", "0"], "argument --num-proc: must be at least 1, got 0"),
    ("train", ["--epochs", "-3"], "argument --epochs: must be at least 1, got -3"),
    ("train", ["--batch-size", "many"], "argument --batch-size: expected a whole number"),
    ("train", ["--max-retries", "-1"], "argument --max-retries: must be at least 0"),
    ("train", ["--learning-rate", "0"], "argument --learning-rate: must be greater than 0"),
    ("train", ["--executor-gpus", "-1"], "argument --executor-gpus: must be at least 0"),
    ("pipeline", ["--holdout", "1"], "argument --holdout: must be in [0, 1), got 1.0"),
    ("prepare", ["--validation", "-0.1"], "argument --validation: must be in [0, 1)"),
    ("prepare", ["--row-groups", "0"], "argument --row-groups: must be at least 1"),
    ("evaluate", ["--split", "test"], "argument --split: invalid choice: 'test'"),
])
def test_bad_options_exit_2_naming_the_option(command, extra, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(BASE[command] + extra)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_good_options_parse():
    args = build_parser().parse_args(BASE["evaluate"] + ["--split", "train"])
    assert args.split == "train"
    args = build_parser().parse_args(BASE["pipeline"] + ["--holdout", "0"])
    assert args.holdout == 0.0


def test_the_interrupted_line_says_how_to_resume_only_when_there_is_something_to_resume():
    import signal

    from hvd_otto.app.cli import interrupted_message
    from hvd_otto.common.errors import Interrupted

    with_run = interrupted_message(Interrupted(signal.SIGTERM, run="file:///s/runs/abc"), "train")
    assert with_run.startswith("interrupted by SIGTERM: 'train' stopped; no output was committed")
    assert "file:///s/runs/abc" in with_run and "--resume" in with_run and "\n" not in with_run
    assert "give --store" in interrupted_message(Interrupted(signal.SIGINT), "pipeline")
    assert "--resume" not in interrupted_message(KeyboardInterrupt(), "predict")
    assert Interrupted(signal.SIGINT).exit_code == 130


def test_sigterm_during_a_command_exits_143_and_runs_its_cleanup(monkeypatch, capsys, tmp_path):
    """The CLI turns SIGTERM into a clean stop: finally blocks run (temp files go), exit 143."""
    import os
    import signal

    from hvd_otto.app import cli, commands

    marker = tmp_path / "temp-file"

    def command(args):
        marker.write_text("x")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            marker.unlink()

    monkeypatch.setattr(commands, "run_predict", command)
    monkeypatch.setattr(cli, "cancel_spark_jobs", lambda: None)
    printed_before_stop = []
    monkeypatch.setattr(cli, "stop_spark",
                        lambda: printed_before_stop.append(capsys.readouterr().err))
    code = cli.main(["predict", "--test", "t.csv", "--model", "m", "--out", "o.csv"])
    assert code == 143 and not marker.exists()
    assert "interrupted by SIGTERM: 'predict' stopped" in capsys.readouterr().err
    assert printed_before_stop == [""]  # Spark is stopped before the last line is printed


def test_the_demo_runs_the_pipeline_command_with_every_training_option(monkeypatch, tmp_path):
    """The demo's pipeline arguments build the Estimator (a hand-made Namespace once lacked
    options added to the pipeline command later, and the README's main command failed)."""
    from hvd_otto.app import cli, commands

    captured = []
    monkeypatch.setattr(commands, "run_pipeline", captured.append)
    demo = cli.build_parser().parse_args(["demo", "--out", str(tmp_path / "demo"), "--rows",
                                          "60", "--num-proc", "1", "--epochs", "2"])
    commands.run_demo(demo)
    (args,) = captured
    assert (args.job, args.num_proc, args.epochs, args.holdout) == ("demo", 1, 2, 0.2)
    assert args.out == str(tmp_path / "demo") and args.test.endswith("test.csv")
    est = commands.make_estimator(args)
    assert est.getNumProc() == 1 and est.getEpochs() == 2


def test_allreduce_groups_option_reaches_the_estimator(tmp_path):
    from hvd_otto.app import cli, commands

    parser = cli.build_parser()
    base = ["train", "--data", "data", "--model", str(tmp_path / "m")]
    assert commands.make_estimator(parser.parse_args(base)).getAllreduceGroups() == 1
    est = commands.make_estimator(parser.parse_args(base + ["--allreduce-groups", "0"]))
    assert est.getAllreduceGroups() == 0
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--allreduce-groups", "-1"])
