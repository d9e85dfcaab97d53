"""Early stopping, best epoch and learning-rate decay as plain arithmetic (no TensorFlow)."""

import math

import pytest

from hvd_otto.rank.rules import DECAY_FACTOR, MIN_DELTA_STOP, EpochRules


def run(rules: EpochRules, values, lr=0.01):
    verdicts = []
    for epoch, value in enumerate(values, start=1):
        verdict = rules.update(epoch, value, lr)
        lr = verdict.lr
        verdicts.append(verdict)
    return verdicts


def test_best_epoch_follows_the_lowest_value():
    rules = EpochRules(patience=0, decay_patience=0, lr=0.01)
    verdicts = run(rules, [1.0, 0.8, 0.9, 0.7, 0.75])
    assert [v.improved for v in verdicts] == [True, True, False, True, False]
    assert rules.best_epoch == 4 and rules.best == 0.7


def test_patience_stops_after_that_many_epochs_without_real_improvement():
    rules = EpochRules(patience=2, decay_patience=0, lr=0.01)
    # 0.9995 improves the best (kept as best weights) but by less than MIN_DELTA_STOP.
    verdicts = run(rules, [1.0, 1.0 - MIN_DELTA_STOP / 2, 1.2])
    assert verdicts[1].improved and not verdicts[1].stop
    assert verdicts[2].stop and rules.stopped


def test_patience_zero_never_stops():
    rules = EpochRules(patience=0, decay_patience=0, lr=0.01)
    assert not any(v.stop for v in run(rules, [1.0] + [2.0] * 20))


def test_decay_halves_the_rate_after_patience_and_restarts_counting():
    rules = EpochRules(patience=0, decay_patience=2, lr=0.04)
    lrs = [v.lr for v in run(rules, [1.0, 1.1, 1.1, 1.1, 1.1], lr=0.04)]
    assert lrs == [0.04, 0.04, 0.04 * DECAY_FACTOR, 0.04 * DECAY_FACTOR,
                   0.04 * DECAY_FACTOR ** 2]


def test_decay_uses_the_optimizers_current_rate():
    """Warm-up changes the rate between epochs; decay halves what the optimizer has now."""
    rules = EpochRules(patience=0, decay_patience=1, lr=0.01)
    rules.update(1, 1.0, 0.01)
    assert rules.update(2, 1.5, 0.03).lr == pytest.approx(0.015)


def test_nan_and_missing_values_count_as_no_improvement():
    rules = EpochRules(patience=2, decay_patience=0, lr=0.01)
    verdicts = run(rules, [float("nan"), None])
    assert not any(v.improved for v in verdicts) and verdicts[1].stop
    assert rules.best_epoch is None


def test_counters_round_trip_through_json_safe_values():
    rules = EpochRules(patience=3, decay_patience=2, lr=0.01)
    counters = rules.counters()
    assert counters["best"] is None and counters["decay_best"] is None  # inf is not JSON
    run(rules, [1.0, 1.2])
    saved = rules.counters()
    restored = EpochRules(patience=3, decay_patience=2, lr=0.5)
    restored.restore(saved)
    assert restored.counters() == saved and restored.lr == 0.01
    fresh = EpochRules(patience=3, decay_patience=2, lr=0.01)
    fresh.restore(counters)
    assert math.isinf(fresh.best) and math.isinf(fresh.stop_best)
