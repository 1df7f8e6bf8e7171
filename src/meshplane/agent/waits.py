"""The agent's loops pause one way: until the agent stops or a period passes, whichever comes first.

Why one helper: every periodic loop of the agent (registration ticks, certificate renewal, policy polls, the
authorization log) needs the same pause, and it must end promptly on stop and never swallow a cancel (it uses
``asyncio.timeout``, not ``asyncio.wait_for``, for the reason in tests/unit/agent/test_agent_cancel.py).
"""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; True when it is set (the loop should end)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()
