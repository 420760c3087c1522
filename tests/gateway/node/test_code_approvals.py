"""What an approver reads of a job's code (gateway/node/jobs/approvals.py), the registry
setting, and the words of a held or rejected job that reach the researcher."""

from __future__ import annotations

import io
import tarfile

import pytest

from gateway.node.config import code_registry
from gateway.node.jobs.approvals import diff, files_of
from spe.wire.code_review import awaiting_reason, rejected_reason
from spe.wire.jobs import NOT_TOLD, public_reason

SHA = "ab" * 32


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_diff_covers_changed_added_and_removed_files():
    before = archive({"main.py": b"a = 1\nprint(a)\n", "old.py": b"x\n"})
    after = archive({"main.py": b"a = 2\nprint(a)\n", "new.py": b"y\n"})
    text = diff(before, after)
    assert "--- a/main.py\n+++ b/main.py\n" in text
    assert "-a = 1\n+a = 2\n" in text
    assert "--- /dev/null\n+++ b/new.py\n" in text
    assert "--- a/old.py\n+++ /dev/null\n" in text
    assert diff(None, after) == ""  # nothing approved before: no diff, the files shown
    assert diff(after, after) == ""


def test_files_are_shown_as_text_and_binaries_only_named():
    files = {f.path: f for f in files_of(archive({"main.py": b"print(1)\n",
                                                  "model.bin": b"\x00\x01"}))}
    assert files["main.py"].text == "print(1)\n"
    assert files["model.bin"].text is None
    assert files["model.bin"].note == "binary"


def test_an_unsafe_archive_is_named_not_unpacked():
    shown = files_of(archive({"../escape.py": b"x"}))
    assert [f.path for f in shown] == ["(archive)"]
    assert "unsafe path" in shown[0].note


def test_the_registry_setting_takes_sha256s_only():
    assert code_registry(f" {SHA.upper()}, {SHA},") == (SHA,)
    assert code_registry("") == ()
    with pytest.raises(ValueError, match="not SHA-256s"):
        code_registry("abc")


def test_the_review_reasons_reach_the_researcher_and_nothing_else_does():
    held = awaiting_reason(SHA, "site-a")
    assert public_reason(held) == held
    rejected = rejected_reason(SHA, "site-a", "reads\nmore than\tit needs")
    assert rejected.endswith("approvers: reads more than it needs")
    assert public_reason(rejected) == rejected
    for forged in (f"the code (sha256 {SHA}) was rejected by site-a's approvers: ",
                   f"the code (sha256 {SHA[:10]}) awaits approval by site-a's approvers",
                   held + "\n3 patients"):
        assert public_reason(forged) == NOT_TOLD, forged
