"""The Estimator behaves like other pyspark.ml estimators: params, defaults, copy, persistence."""

import pytest

from hvd_otto import HorovodKerasEstimator, HorovodKerasModel


def test_defaults_and_docs():
    est = HorovodKerasEstimator()
    assert est.getNumProc() == 2 and est.getEpochs() == 40 and est.getBatchSize() == 128
    assert est.getOptimizer() == "adam" and est.getUseGpu() == "auto"
    assert est.getHiddenLayers() == [512, 512, 512] and est.getDropout() == 0.4
    assert est.getFeaturesCol() == "features" and est.getLabelCol() == "label"
    assert est.getValidationCol() is None and est.getStorePath() is None
    text = est.explainParams()
    for name in ("numProc", "batchSize", "learningRate", "earlyStoppingPatience", "useGpu",
                 "mixedPrecision", "maxRetries", "warmupEpochs", "storePath", "seed"):
        assert f"{name}:" in text


def test_keyword_constructor_setters_and_type_conversion():
    est = HorovodKerasEstimator(numProc=4, learningRate=1, hiddenLayers=[32.0, 16.0])
    assert est.getNumProc() == 4 and est.getLearningRate() == 1.0
    assert est.getHiddenLayers() == [32, 16]
    assert est.setEpochs(3).setBatchSize(64) is est and est.getEpochs() == 3
    est.setParams(optimizer="sgd", verbose=0)
    assert est.getOptimizer() == "sgd" and est.getVerbose() == 0
    with pytest.raises(TypeError):
        HorovodKerasEstimator(numProc="many")


def test_copy_is_independent_and_takes_extra_params():
    est = HorovodKerasEstimator(epochs=5)
    other = est.copy({est.epochs: 9})
    assert other.getEpochs() == 9 and est.getEpochs() == 5
    assert other.uid == est.uid
    other.setBatchSize(7)
    assert est.getBatchSize() == 128


def test_model_shares_column_params():
    model = HorovodKerasModel(b"", [], {})
    assert model.getProbabilityCol() == "probability" and model.getPredictionCol() == "prediction"
    assert model.getPredictBatchSize() == 4096
