"""A rank's shard of the Parquet training data: Petastorm reads, row counts, tf.data."""

from __future__ import annotations

import contextlib
import io
import math

from ..common.rank_config import RankConfig


def steps_for(shard_rows: list[int], batch_size: int) -> int:
    """Steps per epoch that every rank runs: enough for the largest shard to be seen whole.

    Smaller shards wrap around (their dataset repeats), so no rank waits for another
    (no hang) and no rank's tail is dropped.
    """
    if min(shard_rows) <= 0:
        raise RuntimeError(
            f"a Horovod rank got no rows (shard sizes {shard_rows}); write more Parquet row"
            " groups than ranks, or use fewer ranks."
        )
    return max(1, math.ceil(max(shard_rows) / batch_size))


#: Petastorm 0.13.1's thread pool on pyarrow 14 sometimes drops whole row groups without an
#: error (seen here: 2 of 24 row groups missing in about one read of three). The synchronous
#: 'dummy' pool has never lost a row; use it for every read.
READER_POOL = "dummy"


def read_shard(url: str, rank: int, size: int, columns=("features", "label")):
    """Read this rank's Petastorm shard of a Parquet folder into numpy arrays."""
    import numpy as np
    from petastorm import make_batch_reader

    parts: dict[str, list] = {c: [] for c in columns}
    # Petastorm prints "Cache cleanup complete." on close: keep it off the ranks' stdout.
    with contextlib.redirect_stdout(io.StringIO()), make_batch_reader(
            url, cur_shard=rank, shard_count=size, num_epochs=1, schema_fields=list(columns),
            reader_pool_type=READER_POOL, shuffle_row_groups=False) as reader:
        for batch in reader:
            for c in columns:
                parts[c].append(getattr(batch, c))
    return {c: (np.concatenate(v) if v else np.empty((0,))) for c, v in parts.items()}


def count_shard(url: str, rank: int, size: int) -> int:
    """Rows of this rank's shard, reading only the label column."""
    return len(read_shard(url, rank, size, columns=("label",))["label"])


def shard_dataset(config: RankConfig, url: str, rank: int, size: int, shuffle: bool) -> dict:
    """A repeating tf.data pipeline over this rank's shard, in memory when it fits.

    Returns ``dataset``, ``steps`` (the same on every rank), ``rows`` and ``reader`` (a context
    manager to close when training ends).
    """
    import horovod.tensorflow as hvd_tf
    import numpy as np
    import tensorflow as tf

    batch = config.batch_size
    rows = count_shard(url, rank, size)
    all_rows = hvd_tf.allgather_object(rows, name=f"rows-{url.rsplit('/', 1)[-1]}")
    steps = steps_for(all_rows, batch)
    in_memory = rows * config.n_features * 4 <= config.cache_limit_bytes
    if in_memory:
        data = read_shard(url, rank, size)
        x = data["features"].astype(np.float32, copy=False)
        y = data["label"].astype(np.int32, copy=False)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        reader = contextlib.nullcontext()
    else:
        from petastorm import make_batch_reader
        from petastorm.tf_utils import make_petastorm_dataset

        reader = make_batch_reader(url, cur_shard=rank, shard_count=size, num_epochs=None,
                                   schema_fields=["features", "label"],
                                   reader_pool_type=READER_POOL, shuffle_row_groups=shuffle,
                                   seed=config.seed + rank)
        ds = make_petastorm_dataset(reader).map(lambda b: (b.features, b.label)).unbatch()
    ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(min(rows, 20000), seed=config.seed + rank)
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    if rank == 0:
        mode = "in memory" if in_memory else "streamed"
        print(f"rank 0: {url.rsplit('/', 1)[-1]} shards {all_rows} rows, {steps} steps of "
              f"{batch} per rank, {mode}", flush=True)
    return {"dataset": ds, "steps": steps, "rows": rows, "reader": reader}
