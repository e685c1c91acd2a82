"""``python -m percep_lightning``: the ``percep-lightning`` command (also under ``torchrun -m``)."""

import sys

from percep_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
