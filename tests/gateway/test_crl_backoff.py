"""The hub's revocation-list pusher backs off per node: a node that keeps failing is tried
again after 2, 4, 8 ... seconds (at most MAX_BACKOFF), the others are not held up, and a new
list goes to every node at once. Time and the push are scripted; no federation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from gateway.hub import crl_push


def test_a_failing_node_is_tried_less_and_less_often_until_the_list_changes(
        tmp_path: Path, monkeypatch):
    (tmp_path / "crl.pem").write_text("list 1")
    clock = [1000.0]
    monkeypatch.setattr(crl_push.time, "monotonic", lambda: clock[0])
    sent: list[list[str]] = []

    async def push(fanout, signer, nodes, path, body, digest):
        sent.append(sorted(nodes))
        return {n: "delivered" if n == "site-a" else "unreachable" for n in nodes}

    monkeypatch.setattr(crl_push, "push", push)
    pusher = crl_push.CrlPusher(SimpleNamespace(nodes=["site-a", "site-b"]), None, tmp_path)

    def round_at(t: float) -> list[str]:
        clock[0] = t
        before = len(sent)
        asyncio.run(pusher.push_now(only_behind=True))
        return sent[before][:] if len(sent) > before else []

    assert round_at(1000) == ["site-a", "site-b"]
    tries = [t for t in range(1001, 1200) if round_at(t) == ["site-b"]]
    assert tries[:5] == [1002, 1006, 1014, 1030, 1062]  # 2, 4, 8, 16, 32 s after each
    assert [round_at(t) for t in (5000, 6000, 7000)] == [["site-b"]] * 3
    assert round_at(7299) == []
    assert round_at(7300) == ["site-b"]
    assert [w for _, w, _ in pusher._backoff.values()] == [crl_push.MAX_BACKOFF]
    (tmp_path / "crl.pem").write_text("list 2")  # a new revocation: sent to all at once
    assert round_at(8000) == ["site-a", "site-b"]
    assert round_at(8001) == []
    assert round_at(8002) == ["site-b"]
