"""The profile's options, and how an option's table column overrides the basic action.

Precedence, applied per attribute when `Options` is built into a plan:
- only the columns of options that are on count; an attribute none of them mentions takes
  the basic profile's action;
- if several enabled options name the attribute, K (retain) beats C (clean): the options
  that overlap in Table E.1-1 are Retain Device Identity with the two date options on
  calibration/installation dates (the device option keeps device history, which the
  standard lists under it) and Retain UIDs with Retain Device Identity on device UIDs (both
  K); Clean Descriptors with Retain Patient Characteristics are both C;
- the two longitudinal temporal options are alternatives in PS3.15 E.3.6, so asking for
  both is refused rather than silently picking one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Options field -> (column key in Table E.1-1, CID 7050 code, code meaning).
OPTION_COLUMNS: dict[str, tuple[str | None, str, str]] = {
    "clean_pixel_data": (None, "113101", "Clean Pixel Data Option"),
    "clean_graphics": ("cleanGraphOpt", "113103", "Clean Graphics Option"),
    "clean_structured_content": (
        "cleanStructContOpt", "113104", "Clean Structured Content Option"),
    "clean_descriptors": ("cleanDescOpt", "113105", "Clean Descriptors Option"),
    "retain_long_full_dates": (
        "rtnLongFullDatesOpt", "113106",
        "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_long_modified_dates": (
        "rtnLongModifDatesOpt", "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": (
        "rtnPatCharsOpt", "113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("rtnDevIdOpt", "113109", "Retain Device Identity Option"),
    "retain_uids": ("rtnUIDsOpt", "113110", "Retain UIDs Option"),
    "retain_safe_private": ("rtnSafePrivOpt", "113111", "Retain Safe Private Option"),
    "retain_institution_identity": (
        "rtnInstIdOpt", "113112", "Retain Institution Identity Option"),
}
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")

# Combined codes are resolved per element by the attribute's Type in the object's IOD
# (`iod.choose`, PS3.15 E.1.1: Type 3 removed, Type 2 emptied, Type 1 a dummy). This map is
# the choice where no Type decides, the one valid at any Type (D over Z over X), and the
# fallback of a C that has no rule; a sequence of an unknown class is removed instead.
# "U*" is resolved per element: UI -> U, SQ -> recurse (the contained UIDs get their own U),
# anything else -> Z.
COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}


@dataclass(frozen=True)
class Options:
    retain_long_modified_dates: bool = False
    retain_long_full_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    retain_safe_private: bool = False
    clean_pixel_data: bool = False

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ValueError("retain_long_full_dates and retain_long_modified_dates "
                             "are alternatives (PS3.15 E.3.6); choose one")

    def enabled(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]

    def columns(self) -> set[str]:
        return {OPTION_COLUMNS[name][0] for name in self.enabled()} - {None}


def resolve(basic: str, option_actions: dict[str, str], columns: set[str]) -> tuple[str, str]:
    """(action, which column decided it) with combined codes reduced to one code."""
    chosen = [(action, column) for column, action in option_actions.items()
              if column in columns]
    for wanted in ("K", "C"):
        for action, column in chosen:
            if action == wanted:
                return action, column
    return COMBINED.get(basic, basic), "basicProfile"
