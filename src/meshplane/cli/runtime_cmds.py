"""Subcommands of the local runtime: ``up``, ``down``, ``status``, ``logs``, ``scale``, ``demo``, ``agent``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``meshplane`` parser's subparsers."""
    _ = (sub, argparse)
