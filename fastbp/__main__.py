"""``python -m fastbp``: the same command line as the ``fastbp`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
