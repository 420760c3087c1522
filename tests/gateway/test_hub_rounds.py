"""The hub's background rounds report a node they cannot reach once per outage, and not in
the centre's first seconds (the demo starts its nodes after the centre)."""

from __future__ import annotations

from gateway.hub.rounds import Outages


def test_no_outage_is_reported_during_the_startup_grace():
    outages = Outages(grace=3600)
    assert outages.news({"site-a", "site-b"}) == set()
    assert outages.news({"site-a"}) == set()


def test_an_outage_is_reported_once_and_again_after_recovery():
    outages = Outages(grace=0)
    assert outages.news({"site-a"}) == {"site-a"}
    assert outages.news({"site-a"}) == set()
    assert outages.news({"site-a", "site-b"}) == {"site-b"}
    assert outages.news(set()) == set()
    assert outages.news({"site-a"}) == {"site-a"}


def test_a_round_that_missed_a_node_comes_again_soon_then_at_its_interval():
    import asyncio
    import logging
    import time

    from gateway.hub.rounds import every

    times: list[float] = []
    results = iter([{}, {}, {"site-a": 1}, {"site-a": 0}])

    async def step():
        times.append(time.monotonic())
        return next(results)

    async def run():
        await asyncio.wait_for(
            every(3600, step, "a round", logging.getLogger(__name__),
                  missed=lambda stored: "site-a" not in stored, retry=0.05), timeout=1.5)

    try:
        asyncio.run(run())
    except TimeoutError:
        pass
    # Missed twice: again after 0.05 s, then 0.1 s; reached: the next only after an hour.
    assert len(times) == 3, times
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.04 <= first < 0.5, first
    assert 0.09 <= second < 0.6, second
    assert second > first


def test_a_failing_round_counts_as_a_miss_and_without_missed_waits_its_interval():
    import asyncio
    import logging

    from gateway.hub.rounds import every

    calls = {"failing": 0, "plain": 0}

    async def failing():
        calls["failing"] += 1
        raise RuntimeError("database down")

    async def plain():
        calls["plain"] += 1
        return {}

    async def run(step, **kw):
        try:
            await asyncio.wait_for(every(3600, step, "a round", logging.getLogger(__name__),
                                         **kw), timeout=0.5)
        except TimeoutError:
            pass

    asyncio.run(run(failing, missed=lambda _: False, retry=0.05))
    asyncio.run(run(plain))
    assert calls["failing"] >= 3  # 0.05, 0.1, 0.2 s apart
    assert calls["plain"] == 1


def test_the_witness_asks_a_node_it_missed_again_within_seconds(monkeypatch):
    """The demo starts its nodes with the centre: the witness's first round may come before a
    node listens. It must not wait the whole interval (300 s) before the node is witnessed,
    else `spe audit verify --node` right after the start finds no checkpoint."""
    import asyncio
    from types import SimpleNamespace

    from gateway.hub import witness

    answers = iter([{}, {"site-a": 1}, {"site-a": 0}])
    calls: list[int] = []

    async def witness_once(ctx, hub, outages=None):
        calls.append(1)
        return next(answers)

    monkeypatch.setattr(witness, "witness_once", witness_once)
    hub = SimpleNamespace(fanout=SimpleNamespace(nodes={"site-a": "https://127.0.0.1:1"}))

    async def run():
        try:
            await asyncio.wait_for(witness.witness_periodically(None, hub, 300), timeout=3)
        except TimeoutError:
            pass

    asyncio.run(run())
    assert len(calls) == 2  # missed, then reached about a second later; then 300 s
