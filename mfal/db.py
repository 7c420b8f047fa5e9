"""The embedded MongoDB-compatible server for local use.

mfal runs SecantusDB's ``secantusd-py`` (a MongoDB wire-protocol server over
WiredTiger) as a separate process, never imported in-process: it is GPL-2.0 and
mfal is not. The server listens on 127.0.0.1 only and keeps its data in a
persistent storage directory (default ``$MFAL_HOME/db``). Its pid, port and log
live beside it under ``$MFAL_HOME`` so that ``mfal db start`` is idempotent and
``mfal db stop`` finds the process again from any shell. With ``--auth`` the
server requires SCRAM authentication (see :mod:`mfal.db_auth`); once a storage
directory has a user, every later start of it keeps auth on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mfal.db_auth import CREDENTIALS_FILE, Credentials, create_user, new_credentials, read_credentials, write_credentials
from mfal.errors import DatabaseError
from mfal.paths import mfal_home

SERVER_EXECUTABLE = "secantusd-py"
LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerStatus:
    """What ``mfal db status`` reports about the embedded server."""

    running: bool
    pid: int | None
    host: str
    port: int | None
    storage_path: Path
    started_at: datetime | None
    log_path: Path
    auth: bool = False
    credentials_path: Path | None = None

    @property
    def uri(self) -> str | None:
        return f"mongodb://{self.host}:{self.port}" if self.running else None

    def describe(self) -> str:
        if not self.running:
            return f"embedded database: stopped (storage {self.storage_path})"
        since = self.started_at.strftime("%Y-%m-%d %H:%M:%S %Z") if self.started_at else "unknown"
        return (
            f"embedded database: running at {self.uri} (pid {self.pid}) since {since}; "
            f"storage {self.storage_path}; log {self.log_path}; {self.describe_auth()}"
        )

    def describe_auth(self) -> str:
        if not self.auth:
            return "authentication off"
        return f"authentication on (SCRAM-SHA-256, credentials in {self.credentials_path})"


class EmbeddedServer:
    """One SecantusDB server process bound to a state directory.

    The state directory (``$MFAL_HOME`` by default) holds ``db.pid``, ``db.port``
    (kept after a stop so that a restart reuses the port), ``db.storage``,
    ``db.log`` and, once auth is on, ``db.credentials.yaml``; the storage
    directory is the WiredTiger home.
    """

    def __init__(self, state_dir: Path | None = None, storage_path: Path | None = None):
        self.state_dir = Path(state_dir) if state_dir else mfal_home()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file = self.state_dir / "db.pid"
        self.port_file = self.state_dir / "db.port"
        self.storage_file = self.state_dir / "db.storage"
        self.log_path = self.state_dir / "db.log"
        self.credentials_path = self.state_dir / CREDENTIALS_FILE
        self._requested_storage = Path(storage_path).expanduser() if storage_path else None

    # -- state ---------------------------------------------------------------
    @property
    def storage_path(self) -> Path:
        """The storage directory: as requested, else as last started, else the default."""
        if self._requested_storage:
            return self._requested_storage.resolve()
        if self.storage_file.exists():
            return Path(self.storage_file.read_text().strip())
        return (self.state_dir / "db").resolve()

    def credentials(self) -> Credentials | None:
        """The user to log in as, when this storage directory requires authentication."""
        credentials = read_credentials(self.credentials_path)
        return credentials if credentials and credentials.protects(self.storage_path) else None

    def status(self) -> ServerStatus:
        pid = _read_int(self.pid_file)
        port = _read_int(self.port_file)
        running = pid is not None and port is not None and _process_alive(pid) and _port_open(port)
        started = None
        if running:
            started = datetime.fromtimestamp(self.pid_file.stat().st_mtime, tz=timezone.utc)
        return ServerStatus(
            running=running,
            pid=pid if running else None,
            host=LOCALHOST,
            port=port if running else None,
            storage_path=self.storage_path,
            started_at=started,
            log_path=self.log_path,
            auth=self.credentials() is not None,
            credentials_path=self.credentials_path,
        )

    # -- control -------------------------------------------------------------
    def start(self, port: int | None = None, auth: bool = False) -> ServerStatus:
        """Start the server, or return the running one unchanged (idempotent).

        ``auth`` turns SCRAM authentication on for this storage directory, for
        good: a storage that has a user always starts with ``--auth``.
        """
        current = self.status()
        if current.running:
            if self._requested_storage and current.storage_path != self.storage_path:
                raise DatabaseError(
                    f"the embedded database is already running on storage {current.storage_path}; "
                    f"stop it first to use {self.storage_path}"
                )
            if auth and not current.auth:
                raise DatabaseError("the embedded database is running without authentication; "
                                    "stop it with 'mfal db stop', then start it with --auth")
            return current
        self._clear_state_files()
        storage = self.storage_path
        storage.mkdir(parents=True, exist_ok=True)
        port = port or self._previous_port() or _free_port()
        if _port_open(port):
            raise DatabaseError(f"port {port} on {LOCALHOST} is already in use; choose another with --port")
        if auth and self.credentials() is None:
            self._provision_user(storage)
        process = self._launch(storage, port, auth=self.credentials() is not None)
        self.pid_file.write_text(f"{process.pid}\n")
        self.port_file.write_text(f"{port}\n")
        self.storage_file.write_text(f"{storage}\n")
        return self.status()

    def stop(self) -> bool:
        """Stop the server cleanly (SIGTERM, then SIGKILL after a timeout).

        Returns False when no server was running.
        """
        pid = _read_int(self.pid_file)
        if pid is None or not _process_alive(pid):
            self._clear_state_files()
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _process_alive(pid):
                time.sleep(0.1)
        self._clear_state_files()
        return True

    # -- helpers -------------------------------------------------------------
    def _launch(self, storage: Path, port: int, auth: bool) -> subprocess.Popen:
        command = [_server_executable(), "--host", LOCALHOST, "--port", str(port), "--storage-path", str(storage)]
        if auth:
            command.append("--auth")
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=storage,
                start_new_session=True,
            )
        self._wait_until_listening(process, port)
        return process

    def _provision_user(self, storage: Path) -> None:
        """Create the user on this storage: run it once without auth on a private free port."""
        credentials = read_credentials(self.credentials_path) or new_credentials()
        port = _free_port()
        process = self._launch(storage, port, auth=False)
        try:
            create_user(f"mongodb://{LOCALHOST}:{port}", credentials)
        finally:
            _terminate(process)
        write_credentials(self.credentials_path, credentials.with_storage(storage))

    def _previous_port(self) -> int | None:
        port = _read_int(self.port_file)
        return port if port is not None and not _port_open(port) else None

    def _wait_until_listening(self, process: subprocess.Popen, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DatabaseError(
                    f"the embedded database exited at start (code {process.returncode}); "
                    f"last log lines: {_log_tail(self.log_path)}"
                )
            if _port_open(port):
                return
            time.sleep(0.1)
        process.terminate()
        raise DatabaseError(
            f"the embedded database did not listen on port {port} within {START_TIMEOUT_S:.0f} s; "
            f"see {self.log_path}"
        )

    def _clear_state_files(self) -> None:
        # The port file stays: the next start reuses the port, so a my_launchpad.yaml
        # written by ``mfal db launchpad-file`` keeps pointing at the right server.
        self.pid_file.unlink(missing_ok=True)


def _terminate(process: subprocess.Popen) -> None:
    """Stop a server this process started (SIGTERM, then SIGKILL after a timeout)."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _server_executable() -> str:
    """Find ``secantusd-py`` beside the running interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / SERVER_EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(SERVER_EXECUTABLE)
    if found:
        return found
    raise DatabaseError(
        f"{SERVER_EXECUTABLE} not found: install the local extra (pip install 'mfal[local]') "
        "or point mfal at a MongoDB server with MFAL_MONGO_URI or --launchpad"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOCALHOST, port)) == 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
