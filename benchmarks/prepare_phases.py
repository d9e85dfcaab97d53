"""Where ``prepare`` spends its time, phase by phase, on one CSV.

    python benchmarks/prepare_phases.py TRAIN.csv [--master local[2]]

Spark is lazy, so a phase is timed where its Spark jobs run: the functions ``prepare`` calls
are wrapped (nothing in the package changes). Two extra cheap actions make the phases
separable: the parsed rows are counted (from the cache ``read_csv`` fills anyway) before the
duplicate-id check, and the split's cached frame is counted before the fit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

PHASES = ["session start", "header + lines per block", "read+parse+validate",
          "duplicate-id check", "verdict counts", "split", "preprocessing fit",
          "save preprocessing", "Parquet writes", "metadata counts", "rest"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--runs", type=int, default=1,
                        help="prepare this many times in the one session: the first run pays "
                             "the JVM's warm-up, the later ones show the warm phases")
    args = parser.parse_args(argv)
    seconds: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    from pyspark.sql.readwriter import DataFrameWriter

    from hvd_otto import get_spark
    from hvd_otto.data import csv_source, prepare

    spark = get_spark(args.master)
    spark.range(1).count()
    seconds["session start"] = time.perf_counter() - started
    mark = {}

    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            seconds[name] += time.perf_counter() - t

    read_csv, flag, split = prepare.read_csv, csv_source.flag_duplicate_ids, prepare.stratified_split
    build, write_splits, to_parquet = (prepare.build_preprocessing, prepare._write_splits,
                                       DataFrameWriter.parquet)

    def read_csv_(*a, **kw):
        mark["read"] = time.perf_counter()
        result = read_csv(*a, **kw)
        seconds["verdict counts"] += time.perf_counter() - mark["flagged"]
        return result

    def flag_(rows, *a, **kw):
        seconds["header + lines per block"] += time.perf_counter() - mark["read"]
        timed("read+parse+validate", rows.count)
        result = timed("duplicate-id check", flag, rows, *a, **kw)
        mark["flagged"] = time.perf_counter()
        return result

    def split_(*a, **kw):
        train, val = split(*a, **kw)
        timed("split", train.count)
        return train, val

    class Timed:
        def __init__(self, inner, name):
            self.inner, self.name = inner, name

        def fit(self, df):
            return Timed(timed("preprocessing fit", self.inner.fit, df), "save")

        def save(self, path):
            timed("save preprocessing", self.inner.save, path)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    def write_splits_(spark, model, *a, **kw):
        before = seconds["Parquet writes"]
        t = time.perf_counter()
        result = write_splits(spark, model.inner, *a, **kw)
        seconds["metadata counts"] += (time.perf_counter() - t
                                       - (seconds["Parquet writes"] - before))
        return result

    def parquet_(self, *a, **kw):
        return timed("Parquet writes", to_parquet, self, *a, **kw)

    prepare.read_csv, csv_source.flag_duplicate_ids = read_csv_, flag_
    prepare.stratified_split, prepare._write_splits = split_, write_splits_
    prepare.build_preprocessing = lambda *a, **kw: Timed(build(*a, **kw), "fit")
    DataFrameWriter.parquet = parquet_
    with tempfile.TemporaryDirectory(prefix="hvd-otto-phases-") as scratch:
        for run in range(1, args.runs + 1):
            if run > 1:  # a fresh tally; the session started once
                session = seconds["session start"]
                seconds.clear()
                seconds["session start"] = session
            t = time.perf_counter()
            result = prepare.prepare(spark, args.train, os.path.join(scratch, f"out-{run}"))
            total = time.perf_counter() - t
            seconds["rest"] = total - sum(v for k, v in seconds.items() if k != "session start")
            print(f"prepare of {result.metadata['input_rows']:,} rows, run {run} of "
                  f"{args.runs}: {total:.2f} s (+ {seconds['session start']:.2f} s session start)")
            for name in PHASES[int(run > 1):]:
                print(f"  {name:28s} {seconds[name]:7.2f} s", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
