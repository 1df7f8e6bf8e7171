"""Session-wide settings for every test."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The local runtime defaults to transparent interception when it runs as root; the suite keeps today's
    # explicit mode unless a test asks for transparent (``--interception transparent`` wins over this).
    os.environ.setdefault("MESHPLANE_INTERCEPTION", "explicit")
