"""The pipeline job's phase clock, driven by a fake clock."""

from hvd_otto.app.pipeline import PhaseClock


def test_each_lap_is_the_time_since_the_previous_one():
    ticks = iter([10.0, 12.5, 12.75, 20.0])
    clock = PhaseClock(clock=lambda: next(ticks))
    clock.lap("read")
    clock.lap("split")
    clock.lap("fit")
    assert clock.laps == {"read": 2.5, "split": 0.25, "fit": 7.25}
    assert list(clock.laps) == ["read", "split", "fit"]  # in the order they ran
