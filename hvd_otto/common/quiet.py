"""Keep library noise out of Spark workers and Horovod ranks (not out of the user's process)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_worker_warnings() -> None:
    """Silence Petastorm/pyarrow deprecation noise and TF's C++ chatter in this process only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(petastorm|pyarrow)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*ParquetDataset.*")
    logging.getLogger("petastorm").setLevel(logging.ERROR)
