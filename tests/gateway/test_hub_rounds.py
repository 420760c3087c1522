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
