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


def make_config(**changes):
    """A complete RankConfig for tests; keyword arguments change fields."""
    from hvd_otto.common.rank_config import RankConfig

    values = dict(run_dir="/store/runs/r", train_url="file:///store/runs/r/data/train",
                  val_url=None, n_features=93, n_classes=9, model={"kind": "mlp"},
                  optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=("accuracy",), learning_rate=0.001, batch_size=128, epochs=3, patience=4,
                  warmup_epochs=1, lr_decay_patience=1, seed=42, use_gpu="auto",
                  mixed_precision=False, compression="none", backward_passes=1, allreduce_groups=1,
                  cache_limit_bytes=1 << 20, cpu_threads=1,
                  resume=False, custom_objects={}, callbacks=())
    values.update(changes)
    return RankConfig(**values)


def small_features_frame(spark, path: Path, rows: int, n_features: int, seed: int = 7):
    """Synthetic Otto-shaped rows as ``id, features, label``: the seed's indexing and scaling."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    from hvd_otto.data import synthetic
    from hvd_otto.data.csv_source import load_csv

    synthetic.write_csv(str(path), rows=rows, seed=seed, n_features=n_features)
    raw = load_csv(spark, str(path))
    features = [c for c in raw.columns if c.startswith("feat_")]
    prep = Pipeline(stages=[
        StringIndexer(inputCol="target", outputCol="label", stringOrderType="alphabetAsc"),
        VectorAssembler(inputCols=features, outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features", withMean=True),
    ]).fit(raw)
    return prep.transform(raw).select("id", "features", "label").cache()


ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str = "benchmark"):
    """benchmarks/NAME.py as a module (a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_otto_dir(folder: Path, rows: int, seed: int = 5) -> Path:
    """A folder with an Otto-shaped ``train.csv.zip`` of ``rows`` synthetic rows."""
    import zipfile

    from hvd_otto.data import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "train.csv.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.csv", synthetic.generate(rows, seed).to_csv(index=False))
    return folder
