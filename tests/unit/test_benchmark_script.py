"""The benchmark script without Spark: its baseline and its refusal of a missing data folder."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import load_benchmark, synthetic_otto_dir


def test_missing_otto_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HVD_OTTO_DATA", raising=False)
    bench = load_benchmark()
    assert bench.main(["ingest"]) == 2
    assert "pass --otto DIR or set HVD_OTTO_DATA" in capsys.readouterr().err
    assert bench.main(["train", "--otto", str(tmp_path)]) == 2


def test_the_pyarrow_baseline_splits_scales_and_writes_parquet(tmp_path):
    otto = synthetic_otto_dir(tmp_path / "otto", 900)
    rows = load_benchmark().baseline_prepare(str(otto / "train.csv.zip"), str(tmp_path / "out"))
    train = pq.read_table(tmp_path / "out" / "train")
    validation = pq.read_table(tmp_path / "out" / "validation")
    assert rows == 900 and train.num_rows + validation.num_rows == 900
    assert abs(validation.num_rows - 180) <= 9  # 20 %, rounded per class
    features = train.column("features").combine_chunks().flatten().to_numpy()
    assert abs(features.mean()) < 0.05  # standard-scaled on the training split
    assert train.schema.field("label").type == "int32"


def test_the_single_process_keras_script_scores_a_stratified_holdout(tmp_path):
    """Run as the benchmarks run it: alone, in a fresh Python process."""
    otto = synthetic_otto_dir(tmp_path / "otto", 900)
    run = load_benchmark().in_fresh_process(
        "baseline_script", train_zip=str(otto / "train.csv.zip"), epochs=2, batch=64, lr=0.001)
    assert run["epochs"] == 2 and 0 < run["fit_seconds"] <= run["seconds"]
    assert 0 < run["holdout_log_loss"] < 2.2  # below log(9): it learnt something
    assert 0 <= run["holdout_accuracy"] <= 1 and run["fresh_process"]


def test_report_renders_the_readme_tables_from_the_json():
    figures = {
        "machine": {"cores": 2, "cpu": "Xeon", "memory_gib": 24.0, "gpus": 0,
                    "tensorflow": "2.15.1", "pyspark": "3.5.1", "horovod": "0.28.1"},
        "pipeline": {
            "keras_script": {"epochs": 20, "fit_seconds": 25.0, "seconds": 30.0,
                             "ratio_vs_script": 1.0, "holdout_log_loss": 0.49,
                             "holdout_accuracy": 0.81},
            "hvd_otto_defaults_2_ranks": {"epochs": 18, "fit_seconds": 40.0, "seconds": 45.0,
                                          "ratio_vs_script": 1.5, "holdout_log_loss": 0.475,
                                          "holdout_accuracy": 0.815,
                                          "phases": {"read_and_validate_csv": 3.0},
                                          "fit_phases": {"train": 30.0}},
            "keras_script_again": {"epochs": 20, "fit_seconds": 40.0, "seconds": 41.0,
                                   "ratio_vs_script": 1.37, "holdout_log_loss": 0.49,
                                   "holdout_accuracy": 0.81},
            "script_baseline_seconds": 30.0,
            "speedup_vs_horovod_estimator": 3.2},
        "train": {
            "baseline": {"samples_per_second": 20000.0, "epochs_seconds": 40.0,
                         "runs_samples_per_second": [20000.0, 12000.0], "fresh_process": True,
                         "launch_seconds": 0.0, "end_to_end_seconds": 41.0},
            "hvd_otto_2_ranks": {"samples_per_second": 10000.0, "epochs_seconds": 80.0,
                                 "launch_seconds": 7.0, "end_to_end_seconds": 95.0},
            "hvd_otto_1_ranks": {"samples_per_second": 16000.0, "launch_seconds": 7.0,
                                 "end_to_end_seconds": 90.0}},  # a result before epochs_seconds
        "scoring": {"rows": 144368, "numpy_predict_rows_per_second": 100000.0,
                    "transform_rows_per_second": 60000.0, "ratio": 0.6},
    }
    text = load_benchmark().report(figures)
    assert text.startswith("Measured on 2 cores (Xeon), 24.0 GiB, 0 GPU")
    assert "| hvd_otto_defaults_2_ranks | 18 | 40.0 | 45.0 | 1.50 | 0.4750 | 0.8150 |" in text
    assert "3.20× faster than Horovod's KerasEstimator" in text
    assert "against the faster of its runs (30.0 s)" in text
    assert "The Keras script runs first and last; every ×" in text  # an older result
    assert ("One process runs first and last, each in a fresh process (20,000, 12,000 "
            "samples/s)") in text
    assert "| fit: train | 30.0 |" in text
    assert "| hvd_otto_2_ranks | 10,000 | 0.50 | 7.0 | 80.0 | 95.0 |" in text
    assert "| hvd_otto_1_ranks | 16,000 | 0.80 | 7.0 | – | 90.0 |" in text
    assert "| transform, PipelineModel, Parquet written | 60,000 | 0.60 |" in text


def test_scoring_report_names_the_repeats_and_the_cold_first_run():
    scoring = {"rows": 144368, "numpy_predict_rows_per_second": 100000.0,
               "numpy_predict_seconds": [1.6, 1.44, 1.5], "transform_seconds": [4.0, 3, 2.5, 2.9],
               "transform_first_rows_per_second": 36092.0, "transform_rows_per_second": 57747.2,
               "ratio": 0.577, "ratio_first": 0.361}
    text = load_benchmark().report({"scoring": scoring})
    assert "| Keras predict on numpy, fastest of 3 | 100,000 | 1.00 |" in text
    assert "| transform, PipelineModel, Parquet written, fastest of 3 | 57,747 | 0.58 |" in text
    assert "| the first transform (Python workers start, model loads) | 36,092 | 0.36 |" in text


def test_only_the_baselines_run_in_a_fresh_process():
    bench = load_benchmark()
    with pytest.raises(ValueError, match="bench_all is not one of"):
        bench.in_fresh_process("bench_all")
    with pytest.raises(ValueError, match="report is not one of"):
        bench.main([bench.FRESH_PROCESS_FLAG, "report", "{}", "out.json"])


def test_ratios_are_against_the_faster_keras_script_run():
    runs = {"keras_script": {"seconds": 83.0}, "hvd_otto_defaults_2_ranks": {"seconds": 110.0},
            "keras_script_again": {"seconds": 48.0}}
    assert load_benchmark().fastest_script_seconds(runs) == 48.0


@pytest.mark.parametrize("kind, columns", [("log1p", 3), ("sqrt", 3), ("log1p+tfidf", 6),
                                           ("log1p+rowsum", 5), ("log1p+nonzero", 6)])
def test_quality_sweep_features_are_scaled_on_the_training_rows_only(kind, columns):
    sweep = load_benchmark("quality_sweep")
    x = np.array([[0, 1, 4], [2, 0, 9], [5, 3, 0], [100, 100, 100]], dtype=np.float64)
    fit_rows = np.array([True, True, True, False])
    f = sweep.features(x, kind, fit_rows)
    assert f.shape == (4, columns) and f.dtype == np.float32
    assert np.allclose(f[fit_rows].mean(axis=0), 0, atol=1e-6)
    assert f[3, 0] > 2  # the held-out outlier did not move the scaling


@pytest.mark.parametrize("name", ["2x1024_d0.55_0.45", "funnel_1024_512_256"])
def test_quality_sweep_models_have_the_listed_units_and_dropout(name):
    tf = pytest.importorskip("tensorflow")
    sweep = load_benchmark("quality_sweep")
    model = sweep.build_model(name, 93, 9)
    units, rates = sweep.MODELS[name]
    dense = [layer.units for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
    dropout = [layer.rate for layer in model.layers
               if isinstance(layer, tf.keras.layers.Dropout)]
    assert dense == [*units, 9] and dropout == rates
    assert model.layers[-1].activation.__name__ == "softmax"
