"""``python -m bridge``: same as the ``bridge`` console script."""

import sys

from .cli import main

sys.exit(main())
