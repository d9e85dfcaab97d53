"""The learning-curve plot, shared by the evaluation output and MLflow tracking."""

from __future__ import annotations


def save_learning_curve(history: list[dict], path: str) -> bool:
    """Plot loss and val_loss per epoch into ``path`` (PNG); False when there is no history."""
    if not history:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    for key in ("loss", "val_loss"):
        if key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
