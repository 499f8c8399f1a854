"""``python -m frugalml`` runs the command line."""

import sys

from frugalml.cli import main

sys.exit(main())
