"""``python -m batchop``: the same as the ``batchop`` console script."""

import sys

from batchop.cli.main import main

sys.exit(main())
