"""Who may use the HTTP API (API keys and their roles) and what everyone did (the audit log).

Keys are 256-bit random tokens shown once and stored as HMAC-SHA256 under a server secret, not
under a slow KDF: a slow KDF protects guessable passwords, and these tokens cannot be guessed, while
it would cost every request tens of milliseconds of CPU (the API must take hundreds of submits a
second). Keyed with a secret that is not in the database, a stolen dump alone does not even let an
attacker test a guess. The same secret, through HKDF, gives the key that encrypts the webhook
signing secrets, which must be recoverable because every delivery is signed with them.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.db import home_dir
from models.schema import Base, BigId, Job, Timestamp, table

SECRET_ENV = "EINVOICE_API_SECRET"
SECRET_FILE_NAME = "api-secret"
KEY_PREFIX = "eik_"
MIN_SECRET_CHARS = 32


class Role(enum.StrEnum):
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class Permission(enum.StrEnum):
    SUBMIT = "submit"
    READ = "read"
    OPERATE = "operate"


# One table decides what a role may do; the API asks it, never the role name.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.SUBMITTER: frozenset({Permission.SUBMIT, Permission.READ}),
    Role.OPERATOR: frozenset({Permission.SUBMIT, Permission.READ, Permission.OPERATE}),
    Role.AUDITOR: frozenset({Permission.READ}),
}


class ApiKey(Base):
    """A key of the HTTP API: a role, optionally bound to one entity (issuer RFC, cédula or RNC)."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.UniqueConstraint("digest", name="uq_api_keys_digest"),)

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(16))
    entity: Mapped[str | None] = mapped_column(sa.String(64))
    digest: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp())
    created_by: Mapped[str] = mapped_column(sa.String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp())


class AuditEntry(Base):
    """One action of a user (an API key or an OS user at the CLI). Append-only, like events."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Timestamp())
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(48))
    target: Mapped[str | None] = mapped_column(sa.String(100))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    detail: Mapped[str | None] = mapped_column(sa.Text)


# Every API request checks its key and most write an audit row: built once (see models/steps.py).
_KEYS = table(ApiKey)
_LIVE_KEY = sa.select(_KEYS.c.id, _KEYS.c.role, _KEYS.c.entity).where(
    _KEYS.c.digest == sa.bindparam("digest"), _KEYS.c.revoked_at.is_(None)
)
_ADD_AUDIT = sa.insert(table(AuditEntry))


class MissingSecret(RuntimeError):
    """No server secret: keys could be neither checked nor created."""


class ServerSecret:
    """The server secret and what is derived from it; its value never appears in `repr` or logs."""

    def __init__(self, value: str) -> None:
        if len(value) < MIN_SECRET_CHARS:
            raise MissingSecret(f"{SECRET_ENV} must be at least {MIN_SECRET_CHARS} characters")
        raw = value.encode()
        self._mac_key = _derive(raw, b"einvoice api key digest")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(raw, b"einvoice webhook secrets")))

    def __repr__(self) -> str:
        return "ServerSecret(***)"

    def digest(self, key: str) -> str:
        return hmac.new(self._mac_key, key.encode(), hashlib.sha256).hexdigest()

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def unseal(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise MissingSecret(
                f"a stored secret cannot be decrypted: {SECRET_ENV} changed since it was made"
            ) from None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, *, embedded: bool = False) -> ServerSecret:
        """`EINVOICE_API_SECRET` or the file named by `EINVOICE_API_SECRET_FILE`.

        Only the embedded default (no servers configured) may make one up: a file readable by its
        owner alone in EINVOICE_HOME, kept across runs so keys keep working. A real deployment must
        set it, the same on the API and on every worker, or keys and webhook secrets made on one
        would be unusable on another.
        """
        env = os.environ if environ is None else environ
        file = env.get(f"{SECRET_ENV}_FILE")
        value = Path(file).read_text(encoding="utf-8").strip() if file else env.get(SECRET_ENV, "")
        if value:
            return cls(value)
        if not embedded:
            raise MissingSecret(f"set {SECRET_ENV} (or {SECRET_ENV}_FILE) to a random string of 32+ characters")
        path = home_dir(env) / SECRET_FILE_NAME
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
        return cls(path.read_text(encoding="utf-8").strip())


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a live key's id, role and entity (None: every entity)."""

    key_id: str
    role: Role
    entity: str | None

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def sees(self, entity: str) -> bool:
        return self.entity is None or self.entity == entity


def create_key(
    session: Session, secret: ServerSecret, *, role: Role, entity: str | None, name: str | None, actor: str
) -> tuple[ApiKey, str]:
    """A new key; the returned token is the only copy of it that will ever exist."""
    key_id = "key_" + secrets.token_hex(6)
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        name=name or key_id,
        role=role.value,
        entity=entity or None,
        digest=secret.digest(token),
        created_at=datetime.now(UTC),
        created_by=actor,
    )
    session.add(row)
    audit(session, actor=actor, action="key.create", target=key_id, detail=f"role={role.value} entity={entity or '*'}")
    return row, token


def authenticate(session: Session | Connection, secret: ServerSecret, token: str) -> Principal | None:
    """The key's principal, read from the database on every request so that a revocation holds at once."""
    if not token.startswith(KEY_PREFIX):
        return None
    row = session.execute(_LIVE_KEY, {"digest": secret.digest(token)}).first()
    return Principal(row.id, Role(row.role), row.entity) if row is not None else None


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, key_id: str, *, actor: str) -> bool:
    """False when there is no such live key."""
    result = session.execute(
        sa.update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    revoked = int(getattr(result, "rowcount", 0) or 0) == 1
    audit(session, actor=actor, action="key.revoke", target=key_id, outcome="ok" if revoked else "not_found")
    return revoked


def audit(
    session: Session | Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "ok",
    detail: str | None = None,
) -> None:
    row = {"at": datetime.now(UTC), "actor": actor, "action": action, "target": target, "outcome": outcome}
    session.execute(_ADD_AUDIT, {**row, "detail": detail})


def audit_entries(session: Session, *, actor: str | None = None) -> list[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.id)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    return list(session.scalars(query))


def visible_jobs(
    session: Session,
    *,
    entity: str | None,
    state: str | None = None,
    provider: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[Job]:
    """One page of the jobs a key may see, oldest first, after the (created_at, id) of the last row seen.

    Keyset pagination: a page costs the same at the millionth row as at the first, and rows created
    while a client pages do not shift the pages it has not read yet.
    """
    query = sa.select(Job).order_by(Job.created_at, Job.id).limit(limit)
    if entity is not None:
        query = query.where(Job.entity == entity)
    if state:
        query = query.where(Job.state == state)
    if provider:
        query = query.where(Job.provider == provider)
    if after is not None:
        query = query.where(sa.tuple_(Job.created_at, Job.id) > sa.tuple_(sa.literal(after[0], Timestamp()), after[1]))
    return list(session.scalars(query))


class AmbiguousRef(LookupError):
    pass


def resolve_visible(session: Session, ref: str, entity: str | None) -> Job | None:
    """A job by id or internal id among those of `entity` (all when None); None when it is not there.

    Looking only among the key's own jobs is what keeps other entities' ids from leaking: a job of
    another entity is simply not found, and an internal id shared with another entity is not
    ambiguous for a key that cannot see the other job.
    """
    job = session.get(Job, ref)
    if job is not None:
        return job if entity is None or job.entity == entity else None
    query = sa.select(Job).where(Job.internal_id == ref).limit(2)
    if entity is not None:
        query = query.where(Job.entity == entity)
    matches = session.scalars(query).all()
    if len(matches) > 1:
        raise AmbiguousRef(f"internal id {ref!r} exists for several providers or entities; use the job id")
    return matches[0] if matches else None
