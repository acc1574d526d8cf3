"""``python -m runners.train --run-dir DIR``: see runners/train/entry.py."""
import sys

from runners.train.entry import main

sys.exit(main())
