"""Waiting in tests for something another task or process does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], within: float, what: str) -> Any:
    """Await ``probe()`` every 50 ms until ``done`` says yes to its value; return that value.
    Fails naming ``what`` and the last value after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.05)
