"""The analysis environments a job may name, as the hub lists them (`GET
/api/v1/environments`) and checks a submission against: read from their requirements files
(spe.sandbox.environments; the repo's deploy/analysis), the source of truth every node
builds from. The Python version is the hub's own build's (`make analysis-env`), if it has
one. Whether a node runs an environment is still that node's policy (policies/jobs).
"""

from __future__ import annotations

from pydantic import BaseModel

from spe.errors import SPEError
from spe.sandbox import environments
from spe.settings import Settings


class EnvironmentsUnreadable(SPEError):
    """The environments' requirements files cannot be read: nothing is listed or taken."""

    status_code = 503
    error = "environments_unavailable"


class PackageOut(BaseModel):
    name: str
    version: str


class EnvironmentOut(BaseModel):
    name: str
    description: str
    default: bool  # the environment of a job that names none
    # The Python version of the hub's build of it (pyvenv.cfg), None when the hub has none.
    python: str | None
    packages: list[PackageOut]  # every package, pinned (name==version), by name


def known(settings: Settings) -> dict[str, environments.Spec]:
    try:
        return environments.specs(settings.analysis_specs_dir)
    except (environments.SpecError, OSError, UnicodeDecodeError) as exc:
        raise EnvironmentsUnreadable(f"the analysis environments cannot be read: {exc}") \
            from None


def listing(settings: Settings) -> list[EnvironmentOut]:
    built = environments.installed(settings)
    return [EnvironmentOut(
        name=spec.name, description=spec.description,
        default=spec.name == environments.DEFAULT,
        python=environments.python_version(built[spec.name]) if spec.name in built else None,
        packages=[PackageOut(name=p.name, version=p.version) for p in spec.packages])
        for spec in known(settings).values()]


__all__ = ["EnvironmentOut", "EnvironmentsUnreadable", "PackageOut", "known", "listing"]
