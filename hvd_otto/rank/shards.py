"""A rank's shard of the Parquet training data: Petastorm reads, row counts, tf.data."""

from __future__ import annotations

import contextlib
import io
import math

from ..common.rank_config import RankConfig


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's epoch: its data order and dropout masks derive from it alone, so
    a run resumed at epoch k draws what an uninterrupted run draws there."""
    return (seed * 1_000_003 + epoch * 7_919 + rank) % 2**31


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

#: Batches prepared ahead of the training step. Not ``tf.data.AUTOTUNE``: on TF 2.15 an
#: autotuned prefetch buffer made the iterator's destructor wait seconds per epoch trained
#: when ``model.fit`` returned (measured: 11-18 s after 8 epochs of a plain Keras fit, 38 s
#: after a 20-epoch fit of one rank),
#: and a fixed buffer trains as fast (the gather of an in-memory batch is microseconds).
PREFETCH_BATCHES = 4


def without_autotune(dataset):
    """``dataset`` with tf.data's autotuning off. Nothing in the rank's pipelines is tuned (a
    fixed prefetch, sequential maps), and with autotuning on the iterator's destructor could
    hold ``model.fit`` 18-40 s after the last epoch (py-spy: ``RootDataset::Iterator``'s
    destructor waiting on a tf.data thread); with it off, no such wait was seen."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


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
    """This rank's shard as tf.data, in memory when it fits.

    Returns ``steps`` (the same on every rank), ``rows``, ``reader`` (a context manager to
    close when training ends) and ``stream(first_epoch)``: the batches of epochs
    ``first_epoch + 1 .. config.epochs``, exactly ``steps`` per epoch. In memory, the shard is
    held once and each batch gathered by row index; each epoch's order is a full shuffle of the
    indices seeded by :func:`epoch_seed` (none for validation, whose batches are the same every
    epoch), so a resumed run sees the batches an uninterrupted one would.
    Streamed shards (larger than ``cacheLimitMb``) are shuffled by row group and buffer, and
    their order after a resume is not the uninterrupted run's.
    """
    import horovod.tensorflow as hvd_tf
    import numpy as np
    import tensorflow as tf

    batch = config.batch_size
    rows = count_shard(url, rank, size)
    all_rows = hvd_tf.allgather_object(rows, name=f"rows-{url.rsplit('/', 1)[-1]}")
    steps = steps_for(all_rows, batch)
    per_epoch = steps * batch
    in_memory = rows * config.n_features * 4 <= config.cache_limit_bytes
    if in_memory:
        data = read_shard(url, rank, size)
        with tf.device("/cpu:0"):  # host memory; each batch is gathered by row index
            x = tf.Variable(data["features"].astype(np.float32, copy=False), trainable=False)
            y = tf.Variable(data["label"].astype(np.int32, copy=False), trainable=False)
        reader = contextlib.nullcontext()

        def one_epoch(epoch):
            """An epoch's row indices: a full shuffle seeded by (seed, epoch, rank)."""
            order = tf.data.Dataset.range(rows)
            if shuffle:
                order = order.shuffle(rows, seed=epoch_seed(config.seed, epoch, rank),
                                      reshuffle_each_iteration=False)
            return order.repeat().take(per_epoch)

        def stream(first_epoch: int):
            # validation: finite, the same batches every epoch (Keras restarts it each time)
            indices = one_epoch(0) if not shuffle else tf.data.Dataset.range(
                first_epoch + 1, config.epochs + 1).flat_map(one_epoch)
            return without_autotune(
                indices.batch(batch).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
                .prefetch(PREFETCH_BATCHES))
    else:
        from petastorm import make_batch_reader
        from petastorm.tf_utils import make_petastorm_dataset

        reader = make_batch_reader(url, cur_shard=rank, shard_count=size, num_epochs=None,
                                   schema_fields=["features", "label"],
                                   reader_pool_type=READER_POOL, shuffle_row_groups=shuffle,
                                   seed=config.seed + rank)
        streamed = make_petastorm_dataset(reader).map(lambda b: (b.features, b.label)).unbatch()
        if shuffle:
            streamed = streamed.shuffle(min(rows, 20000), seed=config.seed + rank)

        def stream(first_epoch: int):
            return without_autotune(streamed.batch(batch).prefetch(PREFETCH_BATCHES))
    if rank == 0:
        mode = "in memory" if in_memory else "streamed"
        print(f"rank 0: {url.rsplit('/', 1)[-1]} shards {all_rows} rows, {steps} steps of "
              f"{batch} per rank, {mode}", flush=True)
    return {"stream": stream, "steps": steps, "rows": rows, "reader": reader}
