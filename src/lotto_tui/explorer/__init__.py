"""The Textual explorer (``lotto-tui`` without ``--batch``)."""

from .app import ExplorerApp, create_app

__all__ = ["ExplorerApp", "create_app"]
