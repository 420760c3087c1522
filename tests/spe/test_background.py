"""A service's stop ends its background tasks, even one that swallows a cancellation (as
Python 3.11's asyncio.wait_for can), instead of hanging on it."""

from __future__ import annotations

import asyncio

from spe.background import stop_tasks


async def _stubborn(swallow: int, lifetime: float = 60.0) -> None:
    """A retrying loop whose await swallows the first `swallow` cancellations (and which
    ends by itself after `lifetime` seconds, so that no test can hang on it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + lifetime
    while loop.time() < end:
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            if swallow <= 0:
                raise
            swallow -= 1


def test_a_task_that_swallows_its_cancellation_is_stopped_all_the_same():
    async def main():
        task = asyncio.create_task(_stubborn(2), name="stubborn")
        await asyncio.sleep(0.05)
        # One cancel and an await, what the services did, waits here until the task's end.
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done
        await asyncio.wait_for(stop_tasks([task, None], grace=0.2), timeout=5)
        assert task.cancelled()
    asyncio.run(main())


def test_stop_tasks_gives_up_with_a_warning_rather_than_hang(caplog):
    async def main():
        task = asyncio.create_task(_stubborn(1_000, lifetime=1.0), name="never-stops")
        await asyncio.sleep(0.05)
        with caplog.at_level("WARNING", logger="spe.background"):
            await asyncio.wait_for(stop_tasks([task], grace=0.05, tries=3), timeout=5)
        assert not task.done()
        await task  # it ends by itself
    asyncio.run(main())
    assert "never-stops" in caplog.text
