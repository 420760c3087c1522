"""A running service's checkpoints: its audit head signed on start, as the log grows, and on
stop; and the alarm when the chain breaks while it runs (an ERROR log line and /health
degraded, until the operator has looked: `spe audit verify` names the entry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from spe.audit.checkpoints import (
    CheckpointError,
    Signed,
    SigningKey,
    Trust,
    check_signature,
    checkpoint_file,
    make_checkpoint,
    read_file,
    signer_name,
    signing_key,
    write_file,
)
from spe.audit.service import AuditLog, ChainBreak
from spe.background import stop_tasks
from spe.db import session_scope
from spe.pki import PkiError
from spe.settings import Settings

log = logging.getLogger("spe.audit")
#: How often the head is looked at (a one-row read) to see whether a checkpoint is due.
POLL_SECONDS = 5.0


class Checkpointer:
    def __init__(self, audit: AuditLog, sessions: sessionmaker[Session], key: SigningKey,
                 file: Path, *, entries: int, interval: float) -> None:
        self.audit, self.sessions, self.key, self.file = audit, sessions, key, file
        self.entries, self.interval = entries, interval
        #: Why the chain is not trusted any more; None while it verifies.
        self.alarm: str | None = None
        self._anchor: tuple[int, str] | None = None  # the last head signed (seq, hash)
        self._signed_at = time.monotonic()

    def start(self) -> None:
        """Check the checkpoint file against the key, then sign the head (from the file's
        head, so a rewrite while the service was down is found now)."""
        try:
            signed = read_file(self.file)
        except PkiError as exc:
            self._raise(f"the checkpoint file is unreadable: {exc}")
            return
        if signed is not None:
            trust = Trust(self.key.name, {self.key.key_id: self.key.private_key.public_key()})
            data, problem = check_signature(signed, trust)
            if data is None:
                self._raise(f"the checkpoint file {self.file} {problem}")
                return
            self._anchor = (data["seq"], data["hash"])
        try:
            self.checkpoint("start")
        except SQLAlchemyError:  # the database down: /health says so; signed next round
            log.exception("signing the audit head at start failed")

    def checkpoint(self, reason: str) -> Signed | None:
        if self.alarm is not None:
            return None  # a broken chain is never signed
        try:
            with session_scope(self.sessions) as session:
                signed = make_checkpoint(session, self.audit, self.key, reason,
                                         anchor=self._anchor)
        except CheckpointError as exc:
            self._raise(str(exc.brk), exc.brk)
            return None
        self._signed_at = time.monotonic()
        if signed is not None:
            data = signed.fields()
            self._anchor = (data["seq"], data["hash"])
            write_file(self.file, signed)
        return signed

    def due(self) -> str | None:
        """Why a checkpoint is due now ("entries", "interval"), or None."""
        model = self.audit.head_model
        with self.sessions() as session:
            last_seq = session.execute(select(model.last_seq).where(model.id == 1)
                                       ).scalar_one_or_none()
        signed_seq = self._anchor[0] if self._anchor else 0
        if last_seq is None or last_seq == signed_seq:
            return None
        if last_seq - signed_seq >= self.entries:
            return "entries"
        if time.monotonic() - self._signed_at >= self.interval:
            return "interval"
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(POLL_SECONDS, self.interval))
            try:
                reason = await run_in_threadpool(self.due)
                if reason is not None:
                    await run_in_threadpool(self.checkpoint, reason)
            except asyncio.CancelledError:
                raise
            except (SQLAlchemyError, OSError, PkiError):  # the database down: next round
                log.exception("signing the audit head failed")

    def _raise(self, why: str, brk: ChainBreak | None = None) -> None:
        self.alarm = why if brk is None else f"entry {brk.seq}: {brk.problem}"
        log.error("AUDIT CHAIN BROKEN at %s: %s; no checkpoint is signed until it is "
                  "resolved (run `spe audit verify`)", self.key.name, self.alarm)


def make_checkpointer(settings: Settings, audit: AuditLog, sessions: sessionmaker[Session],
                      name: str) -> Checkpointer:
    """`name`: the service's name in the PKI (`hub`, or the node id)."""
    return Checkpointer(audit, sessions, signing_key(settings, name),
                        checkpoint_file(settings, name),
                        entries=settings.audit_checkpoint_entries,
                        interval=settings.audit_checkpoint_interval_seconds)


@contextlib.asynccontextmanager
async def checkpointing(checkpointer: Checkpointer) -> AsyncIterator[None]:
    """For an app's lifespan: sign on start, as the log grows, and on stop."""
    await run_in_threadpool(checkpointer.start)
    task = asyncio.create_task(checkpointer.run())
    try:
        yield
    finally:
        await stop_tasks([task])
        try:
            await run_in_threadpool(checkpointer.checkpoint, "stop")
        except (SQLAlchemyError, OSError, PkiError):
            log.exception("signing the audit head at stop failed")


def signing_audit(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an app's lifespan: its audit head is signed before the app's own background
    work starts and after it has stopped (so the stop checkpoint covers its last entries).
    The app's `state.ctx` names the service: `hub` at the centre, the node id at a node."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        ctx = app.state.ctx
        checkpointer = make_checkpointer(ctx.settings, ctx.audit, ctx.sessions,
                                         signer_name(ctx.service, ctx.name))
        app.state.audit_checkpointer = checkpointer
        async with checkpointing(checkpointer), inner(app):
            yield

    return lifespan
