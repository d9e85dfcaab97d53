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


# --- one table of params and defaults -------------------------------------------------------

from hvd_otto.common.defaults import MODEL_PARAMS, TRAINING_PARAMS, default  # noqa: E402


@pytest.mark.parametrize("spec", TRAINING_PARAMS + MODEL_PARAMS, ids=lambda s: s.name)
def test_each_table_param_has_accessors_default_and_doc(spec):
    est = HorovodKerasEstimator()
    cap = spec.name[0].upper() + spec.name[1:]
    assert getattr(est, f"get{cap}")() == spec.default
    assert f"{spec.name}: {spec.doc}" in est.explainParams()
    value = {"int": 7, "float": 0.25, "str": "sgd", "bool": True, "list_int": [3],
             "object": {"any": object}}[spec.kind]
    assert getattr(est, f"set{cap}")(value) is est and getattr(est, f"get{cap}")() == value


def test_shared_params_come_from_pyspark_with_our_defaults():
    from pyspark.ml.param.shared import HasFeaturesCol, HasSeed

    est = HorovodKerasEstimator()
    assert isinstance(est, HasFeaturesCol) and isinstance(est, HasSeed)
    assert est.getSeed() == 42 and est.setSeed(7).getSeed() == 7
    assert HorovodKerasModel(b"", [], {}).setProbabilityCol("p").getProbabilityCol() == "p"


def test_the_cli_defaults_are_the_estimators():
    from hvd_otto.app.cli import build_parser
    from hvd_otto.app.commands import make_estimator

    for command in (["train", "--data", "d", "--model", "m"],
                    ["pipeline", "--train", "t.csv", "--out", "o"]):
        args = build_parser().parse_args(command)
        made, plain = make_estimator(args), HorovodKerasEstimator()
        for name in ("numProc", "epochs", "batchSize", "learningRate", "optimizer", "useGpu",
                     "mixedPrecision", "maxRetries", "resume"):
            assert made.getOrDefault(name) == plain.getOrDefault(name), name
    demo = build_parser().parse_args(["demo"])
    assert (demo.num_proc, demo.epochs, demo.seed) == (default("numProc"), default("epochs"),
                                                        default("seed"))


def test_cli_options_become_params():
    from hvd_otto.app.cli import build_parser
    from hvd_otto.app.commands import make_estimator

    args = build_parser().parse_args(
        ["train", "--data", "d", "--model", "m", "--num-proc", "3", "--learning-rate", "0.01",
         "--store", "/s", "--resume", "--max-retries", "0", "--gpus", "false"])
    est = make_estimator(args)
    assert (est.getNumProc(), est.getLearningRate(), est.getStorePath(), est.getResume(),
            est.getMaxRetries(), est.getUseGpu()) == (3, 0.01, "/s", True, 0, "false")


def test_resume_without_store_is_refused_on_the_command_line():
    from hvd_otto import InputError
    from hvd_otto.app.cli import build_parser
    from hvd_otto.app.commands import make_estimator

    args = build_parser().parse_args(["train", "--data", "d", "--model", "m", "--resume"])
    with pytest.raises(InputError, match="--resume needs --store"):
        make_estimator(args)


def test_unknown_params_and_positional_arguments_are_refused():
    with pytest.raises(AttributeError):
        HorovodKerasEstimator(numProcs=2)
    with pytest.raises(TypeError, match="forces keyword arguments"):
        HorovodKerasEstimator(2)


@pytest.mark.parametrize("params, message", [
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"useGpu": "maybe"}, "useGpu must be one of"),
    ({"numProc": 0}, "numProc must be at least 1"),
    ({"batchSize": 0}, "batchSize must be at least 1"),
    ({"gradientCompression": "gzip"}, "gradientCompression must be one of"),
    ({"backwardPassesPerStep": 0}, "backwardPassesPerStep must be at least 1"),
    ({"allreduceGroups": -1}, "allreduceGroups must be 0 or more"),
    ({"validationFraction": 1.0}, "validationFraction must be in"),
    ({"modelConfig": "{}", "modelFile": "m.keras"}, "not both"),
    ({"model": "m", "modelConfig": "{}"}, "not both model and modelConfig"),
    ({"optimizer": object()}, "a name or a tf.keras optimizer"),
    ({"loss": 3}, "loss must be a name or a tf.keras.losses.Loss"),
    ({"metrics": "accuracy"}, "metrics must be a list"),
    ({"callbacks": ["print"]}, "is not a tf.keras.callbacks.Callback"),
    ({"customObjects": ["ScaledDense"]}, "customObjects must be a dict"),
])
def test_bad_params_are_input_errors_before_any_spark_work(params, message):
    from hvd_otto import InputError

    with pytest.raises(InputError, match=message):
        HorovodKerasEstimator(**params)._check_params()


def test_model_spec_from_params(tmp_path):
    from hvd_otto import InputError

    est = HorovodKerasEstimator(hiddenLayers=[8, 4], dropout=0.1)
    assert est._model_spec() == {"kind": "mlp", "hidden": [8, 4], "dropout": 0.1,
                                 "batch_norm": False, "input_dropout": 0.0}
    with pytest.raises(InputError, match="not valid JSON"):
        HorovodKerasEstimator(modelConfig="{nope")._model_spec()
    with pytest.raises(InputError, match="not a .keras file"):
        HorovodKerasEstimator(modelFile=str(tmp_path / "missing.keras"))._model_spec()


def test_list_defaults_are_not_shared_between_instances():
    first = HorovodKerasEstimator()
    first.getMetrics().append("top3")
    first.getHiddenLayers().append(7)
    second = HorovodKerasEstimator()
    assert second.getMetrics() == ["accuracy"] and second.getHiddenLayers() == [512, 512, 512]


def test_a_missing_validation_column_is_named_before_any_spark_work():
    from hvd_otto.common.errors import InputError

    class Frame:
        columns = ["features", "label"]

    HorovodKerasEstimator()._check_columns(Frame())
    with pytest.raises(InputError, match=r"no column 'is_val' in the DataFrame"):
        HorovodKerasEstimator(validationCol="is_val")._check_columns(Frame())
