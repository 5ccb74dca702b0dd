"""``python -m vopstore.cli``: the same entry as the ``vopstore`` console script (used under torchrun)."""

import sys

from vopstore.cli.app import main

sys.exit(main())
