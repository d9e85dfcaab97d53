"""Data ingestion: the CSV contract, validated CSV reading, the Spark ML preprocessing,
prepared Parquet for Petastorm, and the Otto-shaped synthetic data."""
