"""Regenerate every bundled zoo model from scratch on CPU and print the time each takes.

Usage: `python scripts/train_zoo.py [NAME ...] [--out DIR] [--no-progress]` (default: all models into
`hooked_bilinear/zoo/`). Same as `python -m hooked_bilinear.train.zoo`.
"""

import sys

from hooked_bilinear.train.zoo import main

if __name__ == "__main__":
    sys.exit(main())
