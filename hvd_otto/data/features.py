"""The Spark ML preprocessing pipeline: label index, feature vector, count transform, scaling."""

from __future__ import annotations

from typing import Sequence

from pyspark import keyword_only
from pyspark.ml import Pipeline, Transformer
from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F

TRANSFORMS = ("log1p", "anscombe", "none")

LABEL_COL = "label"
FEATURES_COL = "features"


class CountTransformer(
    Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """Element-wise variance-stabilising transform of a count Vector column.

    ``log1p`` (default) maps x to log(1 + x); ``anscombe`` to 2·sqrt(x + 3/8); ``none`` copies.
    Runs as a Spark SQL higher-order function, so no Python is involved per row.
    """

    countTransform = Param(
        Params._dummy(),
        "countTransform",
        f"count transform, one of {', '.join(TRANSFORMS)}",
        typeConverter=TypeConverters.toString,
    )

    @keyword_only
    def __init__(self, *, inputCol: str | None = None, outputCol: str | None = None,
                 countTransform: str = "log1p"):
        super().__init__()
        self._setDefault(countTransform="log1p")
        self._set(**self._input_kwargs)

    def setCountTransform(self, value: str) -> "CountTransformer":
        return self._set(countTransform=value)

    def getCountTransform(self) -> str:
        return self.getOrDefault(self.countTransform)

    def setInputCol(self, value: str) -> "CountTransformer":
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> "CountTransformer":
        return self._set(outputCol=value)

    def _transform(self, dataset):
        kind = self.getCountTransform()
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown count transform '{kind}'; use one of {TRANSFORMS}")
        values = vector_to_array(F.col(self.getInputCol()))
        if kind == "log1p":
            values = F.transform(values, lambda x: F.log1p(x))
        elif kind == "anscombe":
            values = F.transform(values, lambda x: 2.0 * F.sqrt(x + 0.375))
        return dataset.withColumn(self.getOutputCol(), array_to_vector(values))


def build_preprocessing(
    feature_cols: Sequence[str], label_col: str | None, transform: str = "log1p"
) -> Pipeline:
    """The preprocessing Pipeline: StringIndexer → VectorAssembler → count transform → scaler.

    Labels are indexed alphabetically (``Class_1`` → 0 … ``Class_9`` → 8, Kaggle's column
    order). The output columns are ``label`` (double) and ``features`` (scaled Vector).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown count transform '{transform}'; use one of {TRANSFORMS}")
    stages = []
    if label_col:
        stages.append(
            StringIndexer(inputCol=label_col, outputCol=LABEL_COL,
                          stringOrderType="alphabetAsc", handleInvalid="error")
        )
    stages += [
        VectorAssembler(inputCols=list(feature_cols), outputCol="_raw_features",
                        handleInvalid="error"),
        CountTransformer(inputCol="_raw_features", outputCol="_counts",
                         countTransform=transform),
        StandardScaler(inputCol="_counts", outputCol=FEATURES_COL, withMean=True, withStd=True),
    ]
    return Pipeline(stages=stages)


def label_names(model) -> list[str]:
    """The label of each index, from the fitted StringIndexer inside a PipelineModel."""
    from pyspark.ml.feature import StringIndexerModel

    for stage in model.stages:
        if isinstance(stage, StringIndexerModel):
            return list(stage.labels)
    raise ValueError("the preprocessing model has no StringIndexer stage")


def apply_preprocessing(model, df):
    """Apply a fitted preprocessing PipelineModel; the label indexer is skipped without labels."""
    from pyspark.ml.feature import StringIndexerModel

    for stage in model.stages:
        if isinstance(stage, StringIndexerModel) and stage.getInputCol() not in df.columns:
            continue
        df = stage.transform(df)
    return df
