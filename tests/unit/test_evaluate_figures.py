"""The evaluation figures from per-(label, prediction) cells (``app.evaluate``), no Spark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hvd_otto.app.evaluate import EPS, figures_from_cells
from hvd_otto.common.errors import InputError


def _cells(labels: np.ndarray, probs: np.ndarray) -> list[tuple]:
    """What ``evaluate``'s one Spark pass returns, computed with numpy."""
    predictions = probs.argmax(axis=1)
    clipped = np.clip(probs[np.arange(len(labels)), labels], EPS, 1 - EPS)
    cells = {}
    for true, predicted, loss in zip(labels, predictions, -np.log(clipped)):
        rows, total = cells.get((true, predicted), (0, 0.0))
        cells[(true, predicted)] = (rows + 1, total + loss)
    return [(float(t), float(p), rows, loss, rows) for (t, p), (rows, loss) in cells.items()]


def test_figures_match_direct_numpy_computation():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 500)
    probs = rng.dirichlet(np.ones(4), 500)
    probs[0, labels[0]] = 0.0  # clipped at EPS, not an infinite loss
    figures = figures_from_cells(_cells(labels, probs), ["a", "b", "c", "d"])
    expected = -np.mean(np.log(np.clip(probs[np.arange(500), labels], EPS, 1 - EPS)))
    assert figures["log_loss"] == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(figures["log_loss"])
    assert figures["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert figures["rows"] == 500
    confusion = np.asarray(figures["confusion_matrix"])
    assert confusion.sum() == 500
    assert list(confusion.sum(axis=1)) == [int((labels == k).sum()) for k in range(4)]
    recall_b = confusion[1, 1] / confusion[1].sum()
    assert figures["per_class"]["b"]["recall"] == pytest.approx(recall_b)
    assert figures["labels"] == ["a", "b", "c", "d"]


def test_classes_never_seen_still_get_a_row_and_column():
    figures = figures_from_cells([(0.0, 0.0, 3, 0.3, 3)], ["x", "y", "z"])
    assert np.asarray(figures["confusion_matrix"]).shape == (3, 3)
    assert figures["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "support": 0}
    assert figures["log_loss"] == pytest.approx(0.1)


def test_without_names_the_classes_are_numbered_from_the_cells():
    figures = figures_from_cells([(0.0, 2.0, 1, 1.0, 1), (2.0, 2.0, 1, 0.5, 1)])
    assert figures["labels"] == ["0", "1", "2"]
    assert figures["accuracy"] == 0.5


@pytest.mark.parametrize("cells, message", [
    ([], "no rows"),
    ([(None, 1.0, 2, 0.4, 2)], "no label or no prediction"),
    ([(1.0, 1.0, 5, 0.4, 3)], "2 row\\(s\\) have no probability for their label"),
])
def test_unevaluable_input_is_a_clear_error(cells, message):
    with pytest.raises(InputError, match=message):
        figures_from_cells(cells, ["a", "b"])
