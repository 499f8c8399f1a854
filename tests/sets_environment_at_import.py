"""A module that sets an environment variable when imported, as Lightning does."""

import os

os.environ["FRUGALML_TEST_VALUE"] = "7"
