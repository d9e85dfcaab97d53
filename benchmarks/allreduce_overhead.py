"""What the allreduce adds to a rank's step: the seed's MLP on random data, with and without
Horovod's DistributedOptimizer, under ``horovodrun`` (no Spark, no Petastorm)::

    .venv/bin/horovodrun -np 2 --gloo -H localhost:2 .venv/bin/python \\
        benchmarks/allreduce_overhead.py --batch 128

Each rank trains its own 22,272-row shard with one TensorFlow thread (what a rank gets on
``local[2]``), first with a plain optimizer (no communication at all), then with
``hvd.DistributedOptimizer`` in turn per gradient (``groups=None``, Horovod's default) and with
all gradients in one grouped allreduce (``groups=1``, hvd-otto's ``allreduceGroups`` default),
``--repeat`` times; it prints seconds per epoch and the share of the wall time its process
spent on a CPU. The difference from plain is the allreduce and the wait for the other rank,
per step. ``--xla`` adds a plain run whose train step XLA compiles (``jit_compile=True``; the
allreduce modes stay without: Horovod's CPU collectives are not XLA operations).
``--latency`` instead times one allreduce of float32 tensors of several sizes (0.58 M floats
is the seed's MLP's gradient) with nothing else running: what the transport alone costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

ROWS = 22_272  # one rank's shard of Otto's training split at 2 ranks


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="batch per rank")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per rank")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of the two allreduce modes, alternated")
    parser.add_argument("--xla", action="store_true",
                        help="also time the plain step compiled by XLA")
    parser.add_argument("--latency", action="store_true",
                        help="only time single allreduces of several sizes")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import horovod.tensorflow.keras as hvd

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hvd_otto.common.keras_model import build_mlp
    from hvd_otto.rank.shards import without_autotune

    hvd.init()
    if args.latency:
        return _allreduce_latency(tf, hvd)
    rng = np.random.default_rng(hvd.rank())
    x = rng.normal(size=(ROWS, 93)).astype(np.float32)
    y = rng.integers(0, 9, ROWS)
    # As in the ranks: without tf.data autotuning (see hvd_otto.rank.shards.without_autotune).
    data = without_autotune(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).repeat().prefetch(4))
    steps = ROWS // args.batch
    modes = ("plain", *(("plain_xla",) if args.xla else ()),
             *("per_tensor", "grouped") * args.repeat)
    for turn, mode in enumerate(modes):
        model = build_mlp(93, 9)
        optimizer = tf.keras.optimizers.legacy.Adam(0.001)
        distributed = not mode.startswith("plain")
        if distributed:
            optimizer = hvd.DistributedOptimizer(optimizer,
                                                 groups=1 if mode == "grouped" else None)
        model.compile(optimizer, "sparse_categorical_crossentropy",
                      jit_compile=mode == "plain_xla")
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)] if distributed else []
        model.fit(data, steps_per_epoch=20, epochs=1, verbose=0, callbacks=callbacks)  # warm-up
        hvd.allreduce(tf.constant(0.0), name=f"start_{turn}")  # both ranks start together
        cpu, wall = _cpu_seconds(), time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=args.epochs, verbose=0)
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        per_epoch = wall / args.epochs
        print(f"rank {hvd.rank()} {mode:<10} batch {args.batch}: {per_epoch:.2f} s/epoch, "
              f"{per_epoch / steps * 1000:.1f} ms/step, on a CPU {cpu / wall:.0%} of the time",
              flush=True)
    return 0


#: Tensor sizes (float32 elements) for ``--latency``: up to 4x the seed's MLP's 0.58 M.
LATENCY_SIZES = (1, 10_000, 145_000, 580_000, 2_320_000)


def _allreduce_latency(tf, hvd, repeats: int = 100) -> int:
    """Median and spread of one eager allreduce per size, after 10 unmeasured ones."""
    for n in LATENCY_SIZES:
        x = tf.random.normal([n])
        for _ in range(10):
            hvd.allreduce(x, name=f"warm_{n}")
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            hvd.allreduce(x, name=f"timed_{n}")
            seconds.append(time.perf_counter() - started)
        ms = sorted(1000 * s for s in seconds)
        if hvd.rank() == 0:
            print(f"allreduce of {n:>9,} floats ({n * 4 / 1e6:5.2f} MB): median "
                  f"{ms[len(ms) // 2]:6.2f} ms (10th percentile {ms[len(ms) // 10]:.2f}, "
                  f"90th {ms[len(ms) * 9 // 10]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
