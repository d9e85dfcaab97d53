"""spark-submit entry point: `spark-submit jobs/pipeline.py --help` (or `python jobs/pipeline.py`).

A thin wrapper over `hvd-otto pipeline`; under spark-submit the master and confs given there win.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvd_otto.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
