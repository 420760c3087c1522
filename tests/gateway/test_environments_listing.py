"""The hub's list of analysis environments (gateway/hub/environments.py) from the files:
each one's pins, the default marked; a file that is not all full pins lists nothing (503),
never a guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.hub.environments import EnvironmentsUnreadable, listing
from spe.settings import Settings


def _spec(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "requirements.txt").write_text(text)


def test_each_environment_with_its_pins_and_the_default_marked(tmp_path: Path):
    _spec(tmp_path, "statistics", "# Description: tables\nnumpy==2.4.6\npandas==2.3.3\n")
    _spec(tmp_path, "imaging", "# Description: images\nSimpleITK==2.5.7\n")
    (tmp_path / "notes").mkdir()  # no requirements file: not an environment
    listed = {e.name: e for e in listing(Settings(analysis_specs_dir=tmp_path,
                                                  analysis_environments=None))}
    assert sorted(listed) == ["imaging", "statistics"]
    assert [(p.name, p.version) for p in listed["imaging"].packages] == [
        ("SimpleITK", "2.5.7")]
    assert listed["statistics"].default
    assert not listed["imaging"].default
    assert listed["imaging"].description == "images"
    assert listed["imaging"].python is None  # not built here


def test_a_file_with_a_range_lists_nothing(tmp_path: Path):
    _spec(tmp_path, "statistics", "numpy>=2\n")
    with pytest.raises(EnvironmentsUnreadable) as refused:
        listing(Settings(analysis_specs_dir=tmp_path))
    assert refused.value.status_code == 503
    assert "not a full pin" in refused.value.detail
