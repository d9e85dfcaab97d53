"""Helpers for both test layers: where the real Otto data lives, small CSV files."""

from __future__ import annotations

from pathlib import Path

OTTO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "otto"
OTTO_TRAIN = OTTO_DIR / "train.csv.zip"
OTTO_TEST = OTTO_DIR / "test.csv.zip"
OTTO_CLASS_COUNTS = [1929, 16122, 8004, 2691, 2739, 14135, 2839, 8464, 4955]


def otto_available() -> bool:
    return OTTO_TRAIN.exists()


def write_csv(path: Path, header: str, rows: list[str], newline: str = "\n") -> str:
    """Write a small CSV for a test and return its path as a string."""
    path.write_text(newline.join([header, *rows]) + newline, encoding="utf-8")
    return str(path)
