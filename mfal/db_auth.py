"""SCRAM credentials of the embedded server (``mfal db start --auth``).

SecantusDB has no localhost exception: a user can only be created on a server
running without ``--auth``. :meth:`mfal.db.EmbeddedServer.start` therefore
provisions a storage directory once, on a private port that nothing else is told
about, and from then on always starts that storage with ``--auth``. One generated
user (SCRAM-SHA-256, role ``root`` on ``admin``: it owns this local server) serves
every storage directory provisioned from the same ``$MFAL_HOME``.

The password lives only in ``$MFAL_HOME/db.credentials.yaml`` (mode 0600) and in
launchpad files written from it (mode 0600); it is never printed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from mfal.errors import DatabaseError
from mfal.paths import write_private_text
from mfal.yamlfile import read_yaml_mapping

CREDENTIALS_FILE = "db.credentials.yaml"
USERNAME = "mfal"
AUTH_SOURCE = "admin"
MECHANISM = "SCRAM-SHA-256"
USER_EXISTS = 51003


@dataclass(frozen=True)
class Credentials:
    """The embedded server's user, and the storage directories that require it."""

    username: str
    password: str = field(repr=False)
    storages: tuple[str, ...] = ()
    authsource: str = AUTH_SOURCE
    mechanism: str = MECHANISM

    def protects(self, storage: Path) -> bool:
        return str(storage) in self.storages

    def with_storage(self, storage: Path) -> "Credentials":
        return replace(self, storages=tuple(sorted({*self.storages, str(storage)})))


def new_credentials() -> Credentials:
    """A user with a freshly generated password (192 random bits)."""
    return Credentials(username=USERNAME, password=secrets.token_urlsafe(24))


def read_credentials(path: Path) -> Credentials | None:
    """The credentials kept in ``path``, or None when auth was never provisioned there."""
    if not path.exists():
        return None
    record = read_yaml_mapping(path, "credentials file")
    try:
        return Credentials(
            username=str(record["username"]),
            password=str(record["password"]),
            storages=tuple(str(s) for s in record.get("storages") or ()),
            authsource=str(record.get("authsource", AUTH_SOURCE)),
            mechanism=str(record.get("mechanism", MECHANISM)),
        )
    except KeyError as exc:
        raise DatabaseError(f"credentials file {path} lacks the key {exc.args[0]!r}; "
                            "remove it and start the server with --auth again") from None


def write_credentials(path: Path, credentials: Credentials) -> None:
    record = {"username": credentials.username, "password": credentials.password,
              "authsource": credentials.authsource, "mechanism": credentials.mechanism,
              "storages": list(credentials.storages)}
    write_private_text(path, yaml.safe_dump(record, sort_keys=False))


def create_user(uri: str, credentials: Credentials) -> None:
    """Create the user on a server running without auth (or reset its password if it exists)."""
    client = MongoClient(uri, serverSelectionTimeoutMS=10000)
    try:
        command = {"pwd": credentials.password, "roles": ["root"], "mechanisms": [credentials.mechanism]}
        admin = client[credentials.authsource]
        try:
            admin.command({"createUser": credentials.username, **command})
        except OperationFailure as exc:
            if exc.code != USER_EXISTS:
                raise
            admin.command({"updateUser": credentials.username, **command})
    except PyMongoError as exc:
        message = exc.details.get("errmsg") if isinstance(exc, OperationFailure) and exc.details else type(exc).__name__
        raise DatabaseError(f"could not create the database user {credentials.username!r}: {message}") from None
    finally:
        client.close()
