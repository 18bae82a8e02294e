"""``python -m fastnn``: the same command line as the ``fastnn`` program."""

import sys

from fastnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
