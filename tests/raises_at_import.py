"""A module whose import raises (not an ImportError): a preload that fails."""

raise RuntimeError("raised at import")
