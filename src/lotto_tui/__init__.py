"""lotto-tui: clients of lotto_engine (the batch CLI now, the Textual explorer next)."""

__version__ = "0.1.0"
