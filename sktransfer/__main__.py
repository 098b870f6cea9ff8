"""``python -m sktransfer``: the same program as the ``sktransfer`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
