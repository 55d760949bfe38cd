"""``python -m ptmkit ...``: the same command line as the ``ptmkit`` script (handy where the
script's folder is not on PATH, e.g. a venv that is not activated)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
