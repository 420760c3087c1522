"""The authenticated caller, as the rest of the system sees it."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("researcher", "approver", "hdab", "output_checker", "admin")


@dataclass(frozen=True)
class Principal:
    subject: str
    issuer: str
    roles: tuple[str, ...]
    institution: str | None = None
    name: str | None = None
    email: str | None = None  # the OIDC `email` claim: where notifications are sent

    @property
    def id(self) -> str:
        """Unique across issuers: the same `sub` at two providers is two people."""
        return f"{self.subject}@{self.issuer}"

    def policy_input(self) -> dict:
        return {
            "id": self.id,
            "subject": self.subject,
            "roles": list(self.roles),
            "institution": self.institution,
        }
