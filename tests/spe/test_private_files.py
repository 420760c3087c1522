"""`make_private` closes what a job opened up, and never follows the job's links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from spe.private_files import make_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_files_become_0600_folders_0700_and_links_lead_nowhere(tmp_path: Path) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("not the job's")
    outside.chmod(0o644)
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir(mode=0o755)
    host_dir.chmod(0o755)
    output = tmp_path / "output"
    (output / "tables" / "deep").mkdir(parents=True)
    (output / "tables" / "deep" / "t.csv").write_text("n\n12\n")
    (output / "top.txt").write_text("x")
    os.mkfifo(output / "pipe")
    (output / "to-host-file").symlink_to(outside)
    (output / "tables" / "to-host-dir").symlink_to(host_dir)
    for path in [output, *output.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)

    make_private(output)

    walked = [p for p in [output, *output.rglob("*")] if not p.is_symlink()]
    assert len(walked) == 6  # output, tables, deep, t.csv, top.txt, pipe
    for path in walked:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(outside) == 0o644
    assert _mode(host_dir) == 0o755
