"""Evaluation of a scored DataFrame: log loss, accuracy, per-class precision/recall, confusion."""

from __future__ import annotations

from typing import Sequence

from ..common.errors import InputError


#: Probabilities are clipped to [EPS, 1 - EPS] before the log, as Spark's logLoss does.
EPS = 1e-15


def evaluate(scored, labels: Sequence[str] | None = None, label_col: str = "label",
             prediction_col: str = "prediction", probability_col: str = "probability") -> dict:
    """Figures of a DataFrame that has true labels, predictions and probability vectors.

    One Spark pass: rows and summed log loss per (label, prediction) cell, so ``scored`` needs
    no cache and a non-deterministic transform is evaluated once. The log loss is Spark's
    ``MulticlassClassificationEvaluator(metricName="logLoss")`` (probabilities clipped to
    [1e-15, 1 - 1e-15]).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    true_index = F.col(label_col).cast("int")
    p_true = vector_to_array(F.col(probability_col))[true_index]
    loss = -F.log(F.greatest(F.least(p_true, F.lit(1 - EPS)), F.lit(EPS)))
    rows = scored.groupBy(label_col, prediction_col).agg(
        F.count(F.lit(1)).alias("rows"), F.sum(loss).alias("loss"),
        F.count(loss).alias("scored")).collect()
    return figures_from_cells([(r[0], r[1], r["rows"], r["loss"], r["scored"]) for r in rows],
                              labels)


def figures_from_cells(cells: Sequence[tuple], labels: Sequence[str] | None = None) -> dict:
    """The figures from ``(label, prediction, rows, summed log loss, rows with a probability
    for their label)`` per cell; an :class:`InputError` for null labels or too short
    probabilities."""
    import numpy as np

    if not cells:
        raise InputError("nothing to evaluate: the scored DataFrame has no rows")
    if any(true is None or predicted is None for true, predicted, *_ in cells):
        raise InputError("some rows have no label or no prediction (null); drop them before "
                         "evaluating")
    unscored = sum(rows - scored for *_, rows, _, scored in cells)
    if unscored:
        raise InputError(f"{unscored} row(s) have no probability for their label (null "
                         "probabilities, or a label index beyond the model's classes)")
    n_classes = max(len(labels or []),
                    1 + max(max(int(true), int(predicted)) for true, predicted, *_ in cells))
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for true, predicted, rows, _, _ in cells:
        confusion[int(true), int(predicted)] = rows
    names = list(labels) if labels else [str(i) for i in range(n_classes)]
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    diagonal = np.diag(confusion)
    per_class = {
        names[i]: {
            "precision": float(diagonal[i] / predicted[i]) if predicted[i] else 0.0,
            "recall": float(diagonal[i] / support[i]) if support[i] else 0.0,
            "support": int(support[i]),
        }
        for i in range(n_classes)
    }
    return {
        "rows": int(confusion.sum()),
        "log_loss": float(sum(loss for *_, loss, _ in cells) / confusion.sum()),
        "accuracy": float(diagonal.sum() / confusion.sum()),
        "per_class": per_class,
        "labels": names,
        "confusion_matrix": confusion.tolist(),
    }


def format_report(figures: dict) -> str:
    """A short plain-text report of :func:`evaluate`'s figures."""
    lines = [f"rows {figures['rows']:,}   log loss {figures['log_loss']:.4f}   "
             f"accuracy {figures['accuracy']:.4f}",
             f"  {'class':<12}{'precision':>10}{'recall':>8}{'support':>9}"]
    for name, c in figures["per_class"].items():
        lines.append(f"  {name:<12}{c['precision']:>10.3f}{c['recall']:>8.3f}{c['support']:>9,}")
    return "\n".join(lines)


def save_plots(figures: dict, history: list[dict], folder: str) -> list[str]:
    """Write ``confusion_matrix.png`` and ``learning_curve.png`` into a local folder."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..common.plots import save_learning_curve

    os.makedirs(folder, exist_ok=True)
    paths = []
    matrix = np.asarray(figures["confusion_matrix"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(figures["labels"])), figures["labels"], rotation=45, ha="right")
    ax.set_yticks(range(len(figures["labels"])), figures["labels"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"log loss {figures['log_loss']:.4f}, accuracy {figures['accuracy']:.4f}")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    paths.append(os.path.join(folder, "confusion_matrix.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    curve = os.path.join(folder, "learning_curve.png")
    if save_learning_curve(history, curve):
        paths.append(curve)
    return paths
