"""``python -m frugalml`` runs the command line."""

import sys

from frugalml.cli import main  # noqa: I001

sys.exit(main())
