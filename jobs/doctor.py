"""spark-submit entry point: `spark-submit jobs/doctor.py` checks the driver's and the
executors' stack (a thin wrapper over `hvd-otto doctor`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hvd_otto.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["doctor", *sys.argv[1:]]))
