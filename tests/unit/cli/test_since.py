"""``meshplane security audit --since``: durations read by the product's one parser (plus days), or a time."""

from __future__ import annotations

import datetime

import pytest

from meshplane.cli.security_cmds import AuditCommandError, parse_since

NOW = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("text", "ago"), [
    ("30s", datetime.timedelta(seconds=30)), ("1h30m", datetime.timedelta(minutes=90)),
    (".5s", datetime.timedelta(milliseconds=500)), ("1d", datetime.timedelta(days=1)),
    ("1.5d", datetime.timedelta(hours=36)),
])
def test_durations_ago(text: str, ago: datetime.timedelta) -> None:
    assert parse_since(text, NOW) == NOW - ago


def test_a_time_and_a_refusal() -> None:
    assert parse_since("2026-01-01T00:00:00Z", NOW) == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(AuditCommandError, match="expected a duration"):
        parse_since("-5s", NOW)
