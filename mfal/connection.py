"""Which database a command talks to, decided in one place.

FireWorks' LaunchPad and mfal's provenance store always get their connection
from :func:`resolve_target`, so ``lpad -l FILE``, ``rlaunch`` and ``mfal`` see the
same database. The order, first match wins:

1. an explicit launchpad file (``--launchpad FILE``) or ``$MFAL_LAUNCHPAD``;
2. a ``my_launchpad.yaml`` found the way FireWorks finds it (``FW_CONFIG_FILE``,
   ``CONFIG_FILE_DIR``, the current directory);
3. ``$MFAL_MONGO_URI`` (database name from the URI path, default ``mfal``);
4. the embedded SecantusDB server, started on demand (with the credentials of
   ``mfal db start --auth`` when its storage requires them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from mfal.errors import ConfigError, DatabaseError
from mfal.yamlfile import read_yaml_mapping

DEFAULT_DATABASE = "mfal"
UNAUTHORIZED, AUTHENTICATION_FAILED = 13, 18
LAUNCHPAD_KEYS = {
    "host", "port", "name", "username", "password", "authsource", "uri_mode",
    "mongoclient_kwargs", "logdir", "strm_lvl", "user_indices", "wf_user_indices",
}


def server_selection_timeout_ms() -> int:
    """How long a client waits for an unreachable server (``$MFAL_DB_TIMEOUT_MS``, default 5000)."""
    return int(os.environ.get("MFAL_DB_TIMEOUT_MS", "5000"))


@dataclass(frozen=True)
class DbTarget:
    """Connection parameters in FireWorks' LaunchPad vocabulary, plus where they came from."""

    host: str
    port: int | None
    name: str
    source: str
    username: str | None = None
    password: str | None = None
    authsource: str | None = None
    uri_mode: bool = False
    mongoclient_kwargs: dict = field(default_factory=dict)
    launchpad_path: Path | None = None
    """The launchpad file these parameters were read from, if any."""

    def describe(self) -> str:
        """A human-readable location that never contains the password."""
        host = redact(self.host)  # pymongo takes a URI as host even without uri_mode
        where = f"{host} (database {self.name})" if self.uri_mode else f"{host}:{self.port}/{self.name}"
        return f"{where}, from {self.source}"

    def client_kwargs(self) -> dict:
        kwargs = {"serverSelectionTimeoutMS": server_selection_timeout_ms()}
        kwargs.update(self.mongoclient_kwargs)
        return kwargs

    def client(self) -> MongoClient:
        """A pymongo client; raises :class:`DatabaseError` if the server cannot be reached."""
        try:
            if self.uri_mode:
                client = MongoClient(self.host, **self.client_kwargs())
            else:
                client = MongoClient(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    authSource=self.authsource or self.name,
                    **self.client_kwargs(),
                )
            client.admin.command("ping")
        except PyMongoError as exc:
            raise DatabaseError(f"cannot reach MongoDB at {self.describe()}: {database_failure(exc)}") from None
        except (TypeError, ValueError) as exc:  # pymongo's checks of option values
            raise ConfigError(f"invalid MongoDB client settings for {self.describe()}: {redact(str(exc))}") from None
        return client

    def database(self):
        return self.client()[self.name]

    def launchpad(self):
        """A FireWorks LaunchPad on the same database as :meth:`database`."""
        from fireworks import LaunchPad

        from mfal.fireworks_ids import use_race_free_ids

        use_race_free_ids()
        self.client()  # fail early with a clear message rather than inside FireWorks
        launchpad = LaunchPad(**self.launchpad_dict())
        initialise_launchpad(launchpad)
        return launchpad

    def launchpad_dict(self) -> dict:
        """The contents of a ``my_launchpad.yaml`` for this target (may hold a password)."""
        record = {"host": self.host, "port": self.port, "name": self.name, "uri_mode": self.uri_mode}
        if self.username:
            record.update(username=self.username, password=self.password)
        if self.authsource:
            record["authsource"] = self.authsource
        kwargs = self.client_kwargs()
        if kwargs:
            record["mongoclient_kwargs"] = kwargs
        return record


def initialise_launchpad(launchpad) -> None:
    """Give a database that FireWorks has never used its id counters, as ``lpad reset`` would.

    Unlike a reset this deletes nothing, so it is safe on a database in use.
    """
    if launchpad.fw_id_assigner.count_documents({}, limit=1) == 0:
        launchpad.fw_id_assigner.update_one(
            {}, {"$setOnInsert": {"next_fw_id": 1, "next_launch_id": 1}}, upsert=True
        )
        launchpad.tuneup()  # the same index options FireWorks itself uses


def resolve_target(launchpad_file: str | Path | None = None, start_embedded: bool = True) -> DbTarget:
    """Decide which database to use (see the module docstring for the order)."""
    explicit = launchpad_file or os.environ.get("MFAL_LAUNCHPAD")
    if explicit:
        return target_from_launchpad_file(Path(explicit), source=f"launchpad file {explicit}")
    found = fireworks_launchpad_file()
    if found:
        return target_from_launchpad_file(found, source=f"launchpad file {found}")
    uri = os.environ.get("MFAL_MONGO_URI")
    if uri:
        return target_from_uri(uri, source="MFAL_MONGO_URI")
    return embedded_target(start=start_embedded)


def fireworks_launchpad_file() -> Path | None:
    """The ``my_launchpad.yaml`` that ``lpad`` would use without ``-l``, if any."""
    from fireworks import fw_config

    location = fw_config.LAUNCHPAD_LOC
    return Path(location) if location and Path(location).exists() else None


def target_from_launchpad_file(path: Path, source: str) -> DbTarget:
    """Read a FireWorks launchpad YAML file, with errors that name the file and the key."""
    record = read_yaml_mapping(path, "launchpad file")
    unknown = sorted(set(record) - LAUNCHPAD_KEYS)
    if unknown:
        raise ConfigError(f"launchpad file {path}: unknown key(s) {unknown}; allowed: {sorted(LAUNCHPAD_KEYS)}")
    uri_mode = bool(record.get("uri_mode", False))
    host = record.get("host") or ("" if uri_mode else "localhost")
    if uri_mode:
        if not host:
            raise ConfigError(f"launchpad file {path}: uri_mode is true but 'host' holds no MongoDB URI")
        name = record.get("name") or _uri_database(host, path)
        port = None
    else:
        name = record.get("name") or "fireworks"
        port = record.get("port", 27017)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"launchpad file {path}: port must be an integer 1-65535, got {port!r}")
    for key in ("username", "password", "authsource"):
        if record.get(key) is not None and not (isinstance(record[key], str) and record[key]):
            raise ConfigError(f"launchpad file {path}: {key!r} must be a non-empty string (quote it in the YAML file)")
    kwargs = record.get("mongoclient_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"launchpad file {path}: mongoclient_kwargs must be a mapping, got {kwargs!r}")
    return DbTarget(
        host=str(host),
        port=port,
        name=str(name),
        source=source,
        username=record.get("username"),
        password=record.get("password"),
        authsource=record.get("authsource"),
        uri_mode=uri_mode,
        mongoclient_kwargs=kwargs,
        launchpad_path=path.resolve(),
    )


def target_from_uri(uri: str, source: str) -> DbTarget:
    return DbTarget(host=uri, port=None, name=_uri_database(uri, source), source=source, uri_mode=True)


def embedded_target(start: bool = True) -> DbTarget:
    """The embedded server's target, starting the server if it is not running."""
    from mfal.db import EmbeddedServer

    server = EmbeddedServer()
    status = server.status()
    if not status.running:
        if not start:
            raise DatabaseError("the embedded database is not running; start it with 'mfal db start'")
        status = server.start()
    credentials = server.credentials()
    if credentials is None:
        return DbTarget(host=status.host, port=status.port, name=DEFAULT_DATABASE, source="embedded server")
    return DbTarget(host=status.host, port=status.port, name=DEFAULT_DATABASE, source="embedded server",
                    username=credentials.username, password=credentials.password,
                    authsource=credentials.authsource,
                    mongoclient_kwargs={"authMechanism": credentials.mechanism})


#: ``user:password@`` with an optional ``scheme://`` before it (pymongo also takes a host without a scheme).
CREDENTIALS_IN_TEXT = re.compile(r"(?<![\w+.-])((?:[A-Za-z][\w+.-]*://)?[^:/@\s'\"]+:)[^@\s'\"]*@")


def redact(text: str) -> str:
    """Replace the password of any ``[scheme://]user:password@host`` in ``text`` by ``***``."""
    return CREDENTIALS_IN_TEXT.sub(r"\1***@", text)


def _uri_database(uri: str, where) -> str:
    try:
        parsed = parse_uri(uri)
    except (PyMongoConfigurationError, ValueError) as exc:
        raise ConfigError(f"invalid MongoDB URI in {where}: {_first_line(exc)}") from None
    return parsed.get("database") or DEFAULT_DATABASE


def database_failure(exc: PyMongoError) -> str:
    """One line on what went wrong with the database: the server's own message, no reply dump.

    A refusal for want of (valid) credentials says where credentials go.
    """
    if isinstance(exc, OperationFailure):
        message = redact(str((exc.details or {}).get("errmsg") or type(exc).__name__))
        if exc.code == UNAUTHORIZED:
            return (f"{message}: the server requires authentication; give 'username' and 'password' in the "
                    "launchpad file, or use a URI mongodb://USER:PASSWORD@HOST/DB in $MFAL_MONGO_URI")
        if exc.code == AUTHENTICATION_FAILED:
            return f"{message}: the server refused the username and password; check them"
        return message
    return _connection_failure(exc)


def _connection_failure(exc: Exception) -> str:
    """The useful head of a pymongo connection error, without its topology dump."""
    text = _first_line(exc).split(", Timeout:")[0]
    return re.sub(r"\s*\(configured timeouts:[^)]*\)", "", text)


def _first_line(exc: Exception) -> str:
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
