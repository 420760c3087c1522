"""The kinds of federated run the hub drives, by the name a submission gives (`app`)."""

from __future__ import annotations

from gateway.hub.federated.combat import drive_combat, settings_of
from gateway.hub.federated.flower import check_submission, drive_flower
from gateway.hub.federated.runs import App

APPS: dict[str, App] = {
    "combat": App(drive=drive_combat, check=lambda body: settings_of(body.config)),
    "flower": App(drive=drive_flower, check=check_submission),
}
