"""``python -m resnorm ...`` (and ``torchrun --nproc_per_node=2 -m resnorm train ...``): the CLI."""

import sys

from resnorm.cli import main

if __name__ == "__main__":
    sys.exit(main())
