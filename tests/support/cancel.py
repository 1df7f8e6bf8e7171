"""Shared by the cancel tests (a result and a cancel delivered in the same event-loop step)."""

from __future__ import annotations

import asyncio


async def ended(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` ends within a generous bound; a task that does not is cancelled again and left."""
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:
        task.cancel()
    return bool(done)
