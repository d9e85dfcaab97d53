"""spark-submit entry point: `spark-submit jobs/evaluate.py --help` (or `python jobs/evaluate.py`).

A thin wrapper over `hvd-otto evaluate`; under spark-submit the master and confs given there win.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvd_otto.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
