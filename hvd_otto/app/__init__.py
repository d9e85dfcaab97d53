"""The application: the ``hvd-otto`` CLI, the pipeline job, scoring and evaluation files,
and SparkSession defaults."""
