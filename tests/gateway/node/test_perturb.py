"""The cell-key method (gateway/node/query/perturb.py): the table's promises for every n
(zero mean, variance at most V, bounded noise, never shown under min_count), the same set
always getting the same noise, the node's secret and record keys in its database."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from gateway.node.index.models import Patient
from gateway.node.query.perturb import (
    KEY_SPACE,
    PTable,
    cell_key,
    load_record_keys,
    node_secret,
    noise_for,
    record_key,
    uniforms_for,
)
from gateway.node.sources.memory import MemoryFhirSource
from gateway.node.sync import sync_index
from spe.db import make_engine, make_sessionmaker, session_scope
from spe.db.migrate import upgrade
from spe.settings import Settings
from tests.gateway.node.test_sync import patient

POLICY = {"method": "cell-key", "max_noise": 5, "variance": 4}
TABLES = [(10, 5, 4.0), (10, 5, 100.0), (5, 3, 1.0), (10, 8, 9.0), (0, 5, 4.0), (10, 0, 4.0)]


def table(min_count: int = 10, d: int = 5, v: float = 4.0) -> PTable:
    return PTable.from_policy({"method": "cell-key", "max_noise": d, "variance": v}, min_count)


@pytest.mark.parametrize(("min_count", "d", "v"), TABLES)
def test_every_row_has_zero_mean_variance_at_most_v_and_bounded_support(min_count, d, v):
    t = table(min_count, d, v)
    checked = 0
    for n in range(min_count, min_count + 3 * d + 5):
        values, p = t.row(n)
        assert p.min() >= 0
        assert abs(p.sum() - 1) < 1e-12
        assert abs(float(p @ values)) < 1e-9, n
        assert float(p @ values.astype(float) ** 2) <= v * (1 + 1e-9), n
        assert np.abs(values).max() <= d
        assert (n + values).min() >= min_count  # never shown under the threshold
        assert t.sd(n) ** 2 <= v * (1 + 1e-9)
        checked += 1
    assert checked > 0


def test_rows_far_from_the_threshold_use_the_whole_variance_and_range():
    t = table()
    values, p = t.row(500)
    assert values.tolist() == list(range(-5, 6))
    assert abs(t.sd(500) - 2.0) < 1e-9
    assert t.bound(500) == 5
    # At the threshold nothing but 0 has mean 0 on [0, D]: shown as it is.
    assert t.row(10)[0].tolist() == [0]


def test_noise_lookup_follows_the_row_distribution():
    t = table()
    us = (np.arange(100_000) + 0.5) / 100_000
    noise = np.array([t.noise(200, u) for u in us])
    values, p = t.row(200)
    freq = np.array([(noise == v).mean() for v in values])
    assert np.abs(freq - p).max() < 1e-4
    assert abs(noise.mean()) < 1e-3


def test_a_count_under_the_threshold_gets_no_noise():
    with pytest.raises(ValueError, match="suppressed"):
        table().noise(9, 0.5)


@pytest.mark.parametrize("bad", [
    {}, {"method": "laplace", "max_noise": 5, "variance": 4},
    {"method": "cell-key", "max_noise": "5", "variance": 4},
    {"method": "cell-key", "max_noise": -1, "variance": 4},
    {"method": "cell-key", "max_noise": True, "variance": 4},
    {"method": "cell-key", "max_noise": 5},
    {"method": "cell-key", "max_noise": 5, "variance": float("nan")},
    {"method": "cell-key", "max_noise": 5, "variance": -1},
])
def test_a_malformed_policy_makes_no_table(bad):
    with pytest.raises(ValueError, match="perturbation"):
        PTable.from_policy(bad, 10)


def keys_for(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, KEY_SPACE, n + 1, dtype=np.int64) \
        .astype(np.uint32)


def test_the_same_set_gets_the_same_noise_however_its_ids_come():
    keys = keys_for(1000)
    t = table()
    ids = np.arange(1, 301)
    shuffled = np.random.default_rng(3).permutation(ids)
    assert noise_for(ids, keys, t) == noise_for(shuffled, keys, t)
    assert noise_for(ids, keys, t) == noise_for(ids.copy(), keys, t)
    assert noise_for(ids, keys, t, salt="x") == noise_for(shuffled, keys, t, salt="x")
    assert np.array_equal(uniforms_for(ids, keys, "mean:age", 4),
                          uniforms_for(shuffled, keys, "mean:age", 4))


def test_sets_differing_by_a_few_patients_get_unrelated_noise():
    """The difference of two noises is not the size of the group between them: over many
    broad sets less a group of 3, it takes many values."""
    keys = keys_for(5000, seed=7)
    t = table()
    gaps = []
    for start in range(1, 2000, 10):
        broad = np.arange(start, start + 400)
        less = broad[3:]
        gaps.append((400 + noise_for(broad, keys, t)) - (397 + noise_for(less, keys, t)))
    assert len(set(gaps)) >= 8
    assert abs(np.mean(gaps) - 3) < 1  # unbiased on average: the noise has mean 0


def test_noise_over_many_sets_has_the_table_moments():
    keys = keys_for(20_000, seed=5)
    t = table()
    noises = np.array([noise_for(np.arange(s, s + 150), keys, t) for s in range(1, 19_000, 3)])
    assert np.abs(noises).max() <= 5
    assert abs(noises.mean()) < 0.1
    assert noises.var() <= 4.3


def test_uniforms_depend_on_the_salt_and_lie_in_the_unit_interval():
    keys = keys_for(100)
    ids = np.arange(1, 50)
    a, b = uniforms_for(ids, keys, "mean:age", 3), uniforms_for(ids, keys, "sd:age", 3)
    assert a.shape == (3,)
    assert not np.array_equal(a, b)
    assert ((a >= 0) & (a < 1)).all()
    assert cell_key(ids, keys) == int(keys[ids].astype(np.int64).sum() % KEY_SPACE)


# ---------------------------------------------------------------------------- the secret


def test_the_secret_file_is_made_once_with_mode_0600(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    first = node_secret(settings, "site-a")
    path = tmp_path / "nodes" / "site-a" / "cellkey.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert node_secret(settings, "site-a") == first
    assert node_secret(settings, "site-b") != first  # each node its own
    assert [p.name for p in path.parent.iterdir()] == ["cellkey.secret"]


def test_the_setting_overrides_the_file(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, node_cellkey_secret=SecretStr("s" * 20 + "x" * 20))
    assert node_secret(settings, "site-a") == b"s" * 20 + b"x" * 20
    assert not (tmp_path / "nodes").exists()
    with pytest.raises(ValueError, match="16"):
        node_secret(Settings(data_dir=tmp_path, node_cellkey_secret=SecretStr("short")), "a")


def test_record_keys_are_set_by_the_sync_and_filled_for_rows_added_later(database_url):
    upgrade(database_url, "node")
    engine = make_engine(database_url)
    secret = b"k" * 32
    try:
        sessions = make_sessionmaker(engine)
        with session_scope(sessions) as session:
            sync_index(session, dicom=None, fhir=MemoryFhirSource(
                [patient("p1", "MRN1"), patient("p2", "MRN2")]), cellkey_secret=secret)
        with session_scope(sessions) as session:
            synced = dict(session.execute(text(
                "SELECT patient_key, record_key FROM patients")).all())
            assert synced == {"MRN1": record_key(secret, "MRN1"),
                              "MRN2": record_key(secret, "MRN2")}
            session.execute(text("INSERT INTO patients (id, patient_key) VALUES (100, 'late')"))
        with session_scope(sessions) as session:
            keys = load_record_keys(session, secret)
            late = session.execute(text(
                "SELECT id, record_key FROM patients WHERE patient_key = 'late'")).one()
            assert late.record_key == record_key(secret, "late")
            ids = session.scalars(text("SELECT id FROM patients")).all()
        assert keys.dtype == np.uint32
        assert all(int(keys[i]) > 0 for i in ids)
        assert max(record_key(secret, k) for k in ("MRN1", "MRN2", "late")) < KEY_SPACE
        assert Patient.__table__.c.record_key is not None
    finally:
        engine.dispose()
