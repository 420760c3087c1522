"""Mailing notifications through the SMTP server in SPE_SMTP_*, after the change that
caused them is committed. A mail that cannot be sent is logged, never fatal: the in-app
notification is the record, the mail a courtesy."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from spe.db import session_scope
from spe.permits.models import Notification
from spe.settings import Settings
from spe.users.models import User

log = logging.getLogger("spe.permits.mail")


def recipients(session: Session, note: Notification) -> list[str]:
    """The addresses of the person, or of everyone with the role (at the institution)."""
    stmt = select(User.email).where(User.email.is_not(None))
    if note.user_id:
        subject, _, issuer = note.user_id.partition("@")
        stmt = stmt.where(User.subject == subject, User.issuer == issuer)
    elif note.role:
        stmt = stmt.where((" " + User.roles + " ").contains(f" {note.role} "))
        if note.institution:
            stmt = stmt.where(User.institution == note.institution)
    else:
        return []
    return sorted({e for e in session.scalars(stmt) if e})


def deliver(settings: Settings, sessions: sessionmaker[Session], ids: list[int]) -> int:
    """Mail the notifications; returns how many mails went out."""
    if not settings.smtp_host or not ids:
        return 0
    with session_scope(sessions) as session:
        notes = list(session.scalars(select(Notification).where(Notification.id.in_(ids))))
        batch = [(n, recipients(session, n)) for n in notes]
    sent = 0
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            for note, to in batch:
                if not to:
                    continue
                msg = EmailMessage()
                msg["From"] = settings.smtp_from
                msg["To"] = ", ".join(to)
                msg["Subject"] = "[EHDS SPE] " + note.message.split(":", 1)[0]
                msg.set_content(note.message + "\n\nSee your notifications in the SPE.")
                smtp.send_message(msg)
                sent += 1
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("notifications not mailed (%s: %s); they are in the app", type(exc).__name__,
                    exc)
    return sent


__all__ = ["deliver", "recipients"]
