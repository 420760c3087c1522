"""The demo's settings for the CLI: one file, `<data-dir>/spe.env`, that `spe demo` writes
and prints, a user `source`s, and `spe token` reads for the demo issuer's URL. Its lines are
`export NAME=VALUE` (shell-quoted) and `#` comments."""

from __future__ import annotations

import shlex
from pathlib import Path

ENV_FILE_NAME = "spe.env"
DEFAULT_ENV_FILE = Path("var/demo") / ENV_FILE_NAME


def write_env_file(path: Path, values: dict[str, str], comments: list[str]) -> None:
    """Write `values` as `export` lines after `comments` (0600: it names key folders)."""
    lines = [f"# {c}" if c else "#" for c in comments]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=VALUE` (or `NAME=VALUE`) lines of `path`; {} if it is not there."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep and name.isidentifier():
                values[name] = value
    return values


def source_hint() -> str:
    """How a user gives the CLI the demo's settings: the file if a demo wrote it here."""
    if DEFAULT_ENV_FILE.exists():
        return f"for the demo, `source {DEFAULT_ENV_FILE}` (it sets every SPE_* the CLI needs)"
    return (f"for the demo, start it (`make demo` or `spe demo`) and `source "
            f"{DEFAULT_ENV_FILE}` (or <--data-dir>/{ENV_FILE_NAME}), which it writes")
