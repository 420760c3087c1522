"""Scanner fleets: which vendor's devices a site runs, as DICOM headers name them."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Manufacturer as each vendor writes it into (0008,0070), then per device kind the models
# with their software versions (and field strength for MR). Models are real product names,
# since the point is realistic header heterogeneity; serial numbers are made up.
VENDORS: dict[str, str] = {
    "siemens": "SIEMENS",
    "ge": "GE MEDICAL SYSTEMS",
    "philips": "Philips",
    "canon": "CANON_MEC",
    "fujifilm": "FUJIFILM Corporation",
    "agfa": "Agfa",
}

CATALOGUE: dict[str, dict[str, tuple[tuple[str, str, str], ...]]] = {
    "siemens": {
        "MR": (("MAGNETOM Vida", "syngo MR XA50", "3"), ("MAGNETOM Sola", "syngo MR XA51", "1.5"),
               ("MAGNETOM Skyra", "syngo MR E11", "3")),
        "CT": (("SOMATOM Force", "syngo CT VB10", ""), ("SOMATOM go.Top", "syngo CT VA40", ""),
               ("SOMATOM Definition AS+", "syngo CT VA48A", "")),
        "PET": (("Biograph Vision 600", "VG80B", ""),),
        "XR": (("Ysio Max", "VF11", "DX"),),
        "MG": (("MAMMOMAT Revelation", "VB10", ""),),
        "US": (("ACUSON Sequoia", "VA20", ""), ("ACUSON Juniper", "VA10", "")),
    },
    "ge": {
        "MR": (("SIGNA Premier", "29\\LX\\MR Software release:RX29.1", "3"),
               ("DISCOVERY MR750", "25\\LX\\MR Software release:DV25.0", "3"),
               ("SIGNA Artist", "28\\LX\\MR Software release:RX28.0", "1.5")),
        "CT": (("Revolution CT", "revo_ct_22bc.50", ""), ("Optima CT660", "ct660_sp1.1", ""),
               ("Revolution EVO", "evo_sp3.4", "")),
        "PET": (("Discovery MI", "pet_dmi_40.00", ""),),
        "XR": (("Definium 656 HD", "DM_Platform_Release_Version 9.2", "DX"),),
        "MG": (("Senographe Pristina", "ADS_56.20", ""),),
        "US": (("LOGIQ E10", "R3.1.1", ""), ("Vivid E95", "v204", "")),
    },
    "philips": {
        "MR": (("Ingenia", "5.7.1\\5.7.1.2", "3"), ("Achieva", "5.3.1\\5.3.1.0", "1.5"),
               ("Ingenia Elition X", "5.9.0\\5.9.0.1", "3")),
        "CT": (("IQon - Spectral CT", "4.7.5", ""), ("Incisive CT", "5.0.1", ""),
               ("Brilliance 64", "4.1.6", "")),
        "PET": (("Vereos PET/CT", "2.0.1", ""),),
        "XR": (("DigitalDiagnost C90", "1.1.3", "DX"),),
        "MG": (("MammoDiagnost DR", "1.2.0", ""),),
        "US": (("EPIQ 7G", "7.0.5", ""), ("Affiniti 70G", "6.0.2", "")),
    },
    "canon": {
        "MR": (("Vantage Orian", "V10.0", "1.5"), ("Vantage Galan 3T", "V9.0", "3")),
        "CT": (("Aquilion ONE", "V10.10", ""), ("Aquilion Prime SP", "V8.9", "")),
        "PET": (("Cartesion Prime", "V1.0", ""),),
        "XR": (("RADREX-i", "V6.20", "DX"),),
        "US": (("Aplio i800", "V6.0", ""),),
    },
    "fujifilm": {
        "MR": (("ECHELON Smart", "V7.1", "1.5"),),
        "CT": (("FCT Embrace", "V2.0", ""),),
        "XR": (("FCR PROFECT CS", "A06", "CR"), ("FDR Smart X", "V4.0", "DX")),
        "MG": (("AMULET Innovality", "V10.2", ""),),
        "US": (("ARIETTA 850", "V3.0", ""),),
    },
    "agfa": {
        "XR": (("CR 30-X", "NX 3.0", "CR"), ("DR 600", "NX 23", "DX")),
    },
}

# Devices per kind in a site's fleet; the first is always the site's main vendor.
FLEET_SIZE: dict[str, tuple[int, int]] = {
    "MR": (2, 3), "CT": (2, 3), "PET": (1, 1), "XR": (1, 2), "MG": (1, 1), "US": (2, 3),
}
MODALITY_OF_KIND = {"MR": "MR", "CT": "CT", "PET": "PT", "MG": "MG", "US": "US"}


@dataclass(frozen=True)
class Device:
    kind: str
    modality: str  # primary modality (a PET/CT also writes CT series)
    vendor: str
    manufacturer: str
    model: str
    software: str
    field_strength: str  # MR only: "1.5" or "3"
    station_name: str
    serial: str


def _pick_vendor(rng: random.Random, kind: str, weights: dict[str, float]) -> str:
    vendors = [v for v in weights if kind in CATALOGUE[v]]
    return rng.choices(vendors, [weights[v] for v in vendors])[0]


def make_fleet(rng: random.Random, station_prefix: str,
               weights: dict[str, float]) -> tuple[Device, ...]:
    """A site's scanners: the first of each kind from the main (heaviest) vendor when it
    builds that kind, the others drawn by `weights`."""
    main = max(weights, key=lambda v: weights[v])
    devices: list[Device] = []
    for kind, (low, high) in FLEET_SIZE.items():
        for n in range(1, rng.randint(low, high) + 1):
            vendor = main if n == 1 and kind in CATALOGUE[main] else \
                _pick_vendor(rng, kind, weights)
            model, software, extra = rng.choice(CATALOGUE[vendor][kind])
            modality = extra if kind == "XR" else MODALITY_OF_KIND[kind]
            devices.append(Device(
                kind=kind, modality=modality, vendor=vendor, manufacturer=VENDORS[vendor],
                model=model, software=software,
                field_strength=extra if kind == "MR" else "",
                station_name=f"{station_prefix}{kind}{n:02d}",
                serial=str(rng.randint(10000, 999999)),
            ))
    return tuple(devices)


def pick_device(rng: random.Random, fleet: tuple[Device, ...], kind: str) -> Device:
    """The scanner for one exam: the first (main-vendor) device does most of the work."""
    devices = [d for d in fleet if d.kind == kind]
    return rng.choices(devices, [3.0] + [1.0] * (len(devices) - 1))[0]
