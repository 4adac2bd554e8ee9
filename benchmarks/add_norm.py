"""Fused add+norm benchmark (thin wrapper): ``python benchmarks/add_norm.py [--shapes 8192x8192 ...]``.

Same as ``resnorm bench``; see ``python benchmarks/add_norm.py --help`` and docs/kernels.md.
"""

import sys

from resnorm.bench import main

if __name__ == "__main__":
    sys.exit(main())
