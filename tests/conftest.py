"""Shared fixtures: a real SecantusDB server for the whole session, a fresh store per test."""

import os
import uuid
from pathlib import Path

# Set before torch loads OpenMP: spin-waiting threads make a busy 2-core machine crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def isolated_mfal_home(tmp_path_factory):
    """Keep every test away from the user's ~/.mfal and any my_launchpad.yaml around."""
    home = tmp_path_factory.mktemp("mfal_home")
    saved = {key: os.environ.get(key) for key in ("MFAL_HOME", "MFAL_LAUNCHPAD", "MFAL_MONGO_URI")}
    os.environ["MFAL_HOME"] = str(home)
    os.environ.pop("MFAL_LAUNCHPAD", None)
    os.environ.pop("MFAL_MONGO_URI", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def fireworks_logger_on_the_session_stdout():
    """Make FireWorks' LaunchPad logger before any test captures stdout.

    FireWorks binds a logger's stream handler to ``sys.stdout`` as it is when the
    logger is first made, once per process. Made inside a test that uses
    ``capsys``, it keeps that test's stream, which is closed afterwards, and a
    later test's LaunchPad prints "--- Logging error ---" with a traceback.
    """
    from fireworks.fw_config import STREAM_LOGLEVEL
    from fireworks.utilities.fw_utilities import get_fw_logger

    get_fw_logger("launchpad", stream_level=STREAM_LOGLEVEL)


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory):
    """A real SecantusDB server process on a free port with temporary storage."""
    from mfal.db import EmbeddedServer

    root = tmp_path_factory.mktemp("secantus")
    server = EmbeddedServer(state_dir=root / "state", storage_path=root / "storage")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_uri(embedded_server):
    return embedded_server.status().uri


@pytest.fixture
def mongo_client(mongo_uri):
    from pymongo import MongoClient

    client = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def database_name():
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(mongo_client, database_name):
    """A :class:`mfal.store.Store` on a fresh database of the session server."""
    from mfal.store import Store

    yield Store(mongo_client[database_name])
    mongo_client.drop_database(database_name)


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"reference data folder {SHARED} is missing (the repository must sit beside shared/)")
    return SHARED


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    """A tiny four-member H committee (see :mod:`tests.campaign_helpers`), once per test module."""
    from tests.campaign_helpers import tiny_h3_committee

    return tiny_h3_committee(tmp_path_factory.mktemp("committee") / "h3.pt")


@pytest.fixture
def launchpad_file(mongo_uri, database_name, tmp_path, mongo_client):
    """A FireWorks launchpad file for a fresh database of the session server."""
    import yaml

    host, port = mongo_uri.removeprefix("mongodb://").split(":")
    path = tmp_path / "my_launchpad.yaml"
    path.write_text(yaml.safe_dump({"host": host, "port": int(port), "name": database_name}))
    yield path
    mongo_client.drop_database(database_name)
