"""deploy/systemd: the units pass `systemd-analyze verify` (systemd's own parser, without
systemd running), start `spe` commands the CLI has with the same options and ports as
deploy/compose.yaml, keep their hardening, and their environment files make valid
production settings."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from typer.testing import CliRunner

from spe.cli.main import app
from spe.settings import REPO_ROOT, Settings
from tests.conftest import IN_CI
from tests.test_deploy import SERVICES

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
INSTALLED_SPE = "/opt/spe/venv/bin/spe"
# Keys of systemd 254 and later, which older ones ignore with a warning (the units say so).
NEWER_KEYS = ("RestartSteps", "RestartMaxDelaySec")


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd repeats keys), comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, path
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(path: Path, section: str, key: str) -> str:
    values = unit(path)[section].get(key, [])
    assert len(values) == 1, (path.name, key, values)
    return values[0]


def command_of(path: Path, instance: str = "site-a") -> list[str]:
    """ExecStart as argv, with the instance and host specifiers filled in."""
    text = one(path, "Service", "ExecStart").replace("%i", instance).replace("%H", "host")
    return shlex.split(text)


def test_the_units_are_there() -> None:
    assert {u.name for u in UNITS} == {"spe-central.service", "spe-node@.service",
                                      "spe-node-worker@.service"}


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        if IN_CI:
            pytest.fail("systemd-analyze (Debian package systemd) is needed in CI")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return found


def _systemd_version(analyze: str) -> int:
    out = subprocess.run([analyze, "--version"], capture_output=True, text=True).stdout
    return int(re.match(r"systemd (\d+)", out).group(1))


def _verify(analyze: str, folder: Path) -> tuple[int, list[str]]:
    """`systemd-analyze verify` of the units in `folder` (templates as instance site-a,
    with this test run's `spe` for the installed one): exit status and complaints."""
    result = subprocess.run([analyze, "verify", "--man=no",
                             *sorted(str(p) for p in folder.glob("*.service"))],
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines


def _instantiate(into: Path, *, edit=lambda text: text) -> Path:
    into.mkdir()
    spe = Path(sys.executable).parent / "spe"
    assert os.access(spe, os.X_OK), spe
    for path in UNITS:
        text = edit(path.read_text().replace(INSTALLED_SPE, str(spe)))
        (into / path.name.replace("@.", "@site-a.")).write_text(text)
    return into


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    status, complaints = _verify(analyze, _instantiate(tmp_path / "units"))
    if _systemd_version(analyze) < 254:
        complaints = [c for c in complaints
                      if not any(f"Unknown key '{k}'" in c or f"Unknown key name '{k}'" in c
                                 for k in NEWER_KEYS)]
    assert status == 0, complaints
    assert not complaints, complaints


def test_systemd_analyze_verify_would_see_a_mistake(tmp_path: Path) -> None:
    """The check above is not vacuous: the same units with one bad value are refused."""
    analyze = _systemd_analyze()
    _, complaints = _verify(analyze, _instantiate(
        tmp_path / "units", edit=lambda t: t.replace("Restart=on-failure", "Restart=often")))
    assert any("Failed to parse service restart" in c for c in complaints), complaints


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_command_is_one_the_cli_has(path: Path) -> None:
    argv = command_of(path)
    assert argv[0] == INSTALLED_SPE
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    assert result.exit_code == 0, result.output


def _compose_command(name: str) -> list[str]:
    return SERVICES[name]["command"]


def test_the_same_commands_and_ports_as_compose() -> None:
    central = command_of(SYSTEMD / "spe-central.service")
    node = command_of(SYSTEMD / "spe-node@.service")
    worker = command_of(SYSTEMD / "spe-node-worker@.service")
    assert central[1:] == _compose_command("central")[1:]
    assert node[1:] == _compose_command("node-site-a")[1:]
    assert worker[1:4] == _compose_command("worker-site-a")[1:4]  # spe node worker --concurrency


def test_hardening() -> None:
    central = unit(SYSTEMD / "spe-central.service")["Service"]
    assert central["User"] == ["spe"]  # a dedicated user, never root
    assert central["CapabilityBoundingSet"] == [""]
    assert central["RestrictNamespaces"] == ["yes"]
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["NoNewPrivileges"] == ["yes"], path.name
        assert service["ProtectSystem"] == ["strict"], path.name
        assert service["PrivateTmp"] == ["yes"], path.name
        assert service["UMask"] == ["0077"], path.name
        assert service["Restart"] == ["on-failure"], path.name
        assert service["RestartPreventExitStatus"] == ["2"], path.name  # refusals
        state = "/var/lib/" + service["StateDirectory"][0]
        assert service["ReadWritePaths"] == [state], path.name
        assert service["WorkingDirectory"] == [state], path.name
        assert service["EnvironmentFile"], path.name
    for name in ("spe-node@.service", "spe-node-worker@.service"):
        service = unit(SYSTEMD / name)["Service"]
        # bubblewrap makes namespaces and mounts /proc: nothing here may forbid it.
        for key in ("RestrictNamespaces", "ProtectKernelTunables", "ProtectProc",
                    "PrivateDevices", "ProtectControlGroups"):
            assert key not in service, (name, key)
        assert service["Delegate"] == ["pids memory"], name


ENV_FILES = {"central.env.example": "spe-central.service",
             "node.env.example": "spe-node@.service"}


def _filled(value: str) -> str:
    def one_value(match: re.Match) -> str:
        words = match.group(1)
        if words == "id":
            return "site-a"
        if "secret" in words:
            return "s3cr3t-" + "".join(chr(0x61 + (i * 7) % 26) + str(i % 10)
                                       for i in range(30))
        return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-") or "x"
    return re.sub(r"<([^>]*)>", one_value, value)


@pytest.mark.parametrize("name", list(ENV_FILES))
def test_each_environment_file_makes_valid_production_settings(name: str, monkeypatch,
                                                                tmp_path: Path) -> None:
    values = dotenv_values(SYSTEMD / name)
    known = {f"SPE_{field.upper()}" for field in Settings.model_fields}
    assert values
    assert not set(values) - known, sorted(set(values) - known)
    for key in os.environ:
        if key.startswith("SPE_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, _filled(value or ""))
    # The unit's own Environment= lines (SPE_NODE_ID=%i).
    for line in unit(SYSTEMD / ENV_FILES[name])["Service"].get("Environment", []):
        key, _, value = line.partition("=")
        monkeypatch.setenv(key, value.replace("%i", "site-a"))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    settings = Settings()
    assert settings.environment == "production"
    state = "/var/lib/" + unit(SYSTEMD / ENV_FILES[name])["Service"]["StateDirectory"][0]
    assert str(settings.data_dir) == state.replace("%i", "site-a")
    if name == "central.env.example":
        assert list(settings.federation_nodes) == ["site-a"]
        assert settings.tls_cert_file is not None


@pytest.mark.parametrize("name", list(ENV_FILES))
def test_each_environment_file_reads_the_same_in_a_shell(name: str, tmp_path: Path) -> None:
    """The runbook's restore sources these files (`set -a; . FILE`): once filled in, the
    shell must read the values systemd (and python-dotenv, like it) reads."""
    filled = tmp_path / name
    filled.write_text(_filled((SYSTEMD / name).read_text()))
    expected = {k: v or "" for k, v in dotenv_values(filled).items()}
    result = subprocess.run(["bash", "-c", f"set -a; . {shlex.quote(str(filled))}; env -0"],
                            capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    shell = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    assert {k: shell.get(k) for k in expected} == expected
