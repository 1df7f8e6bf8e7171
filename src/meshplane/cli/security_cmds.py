"""Subcommands of the security area of the ``meshplane`` command."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``meshplane`` parser's subparsers."""
    _ = sub
