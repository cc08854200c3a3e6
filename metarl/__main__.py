"""``python -m metarl`` is the ``metarl`` command."""

import sys

from metarl.cli import main

sys.exit(main())
