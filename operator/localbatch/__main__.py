"""``python -m localbatch``: run the local Azure Batch service (same flags as ``batchop emulator``)."""

import sys

from localbatch.cli import main

sys.exit(main())
