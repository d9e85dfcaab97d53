"""The unfitted Estimator saves and loads with Spark ML persistence."""

from hvd_otto import HorovodKerasEstimator


def test_estimator_save_and_load(tmp_path, spark):
    est = HorovodKerasEstimator(numProc=3, hiddenLayers=[8], validationCol="is_val")
    est.save(str(tmp_path / "est"))
    loaded = HorovodKerasEstimator.load(str(tmp_path / "est"))
    assert loaded.getNumProc() == 3 and loaded.getHiddenLayers() == [8]
    assert loaded.getValidationCol() == "is_val" and loaded.uid == est.uid
