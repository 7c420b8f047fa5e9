"""The store rides out a restart of the database server (same port, same storage)."""

import logging
import threading
import time

import pytest
from ase import Atoms
from pymongo import MongoClient

from mfal.db import EmbeddedServer
from mfal.errors import DatabaseError
from mfal.store import Store


@pytest.fixture
def private_server(tmp_path):
    """A server of this test's own, which it may stop and start again."""
    server = EmbeddedServer(state_dir=tmp_path / "state", storage_path=tmp_path / "storage")
    server.start()
    yield server
    server.stop()


def test_store_waits_for_a_restarted_server_and_logs_each_attempt(private_server, caplog):
    port = private_server.status().port
    client = MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=300)
    store = Store(client["restart"])
    first = store.put_structure(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    private_server.stop()
    restart = threading.Timer(2.5, lambda: private_server.start(port=port))
    restart.start()
    try:
        with caplog.at_level(logging.WARNING, logger="mfal.store"):
            second = store.put_structure(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.80]]))
    finally:
        restart.join()
    assert {first, second} == set(store.structures.distinct("_id"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0].startswith("mfal: database unreachable while storing a structure (attempt 1 failed: ")
    assert messages[0].endswith("retrying in 0.5 s")
    assert any("retrying in 1.0 s" in message for message in messages)
    assert messages[-1].startswith("mfal: database reachable again; storing a structure succeeded at attempt ")
    client.close()


def test_store_gives_up_after_its_patience(monkeypatch):
    monkeypatch.setenv("MFAL_DB_RETRY_S", "1")
    client = MongoClient("mongodb://127.0.0.1:9", serverSelectionTimeoutMS=100, connect=False)
    started = time.monotonic()
    with pytest.raises(DatabaseError, match=r"database unreachable while creating indexes after \d attempt"):
        Store(client["nowhere"])
    assert time.monotonic() - started < 5


def test_patience_must_be_a_number(monkeypatch):
    monkeypatch.setenv("MFAL_DB_RETRY_S", "soon")
    client = MongoClient("mongodb://127.0.0.1:9", serverSelectionTimeoutMS=100, connect=False)
    with pytest.raises(DatabaseError, match="MFAL_DB_RETRY_S must be a number of seconds; got 'soon'"):
        Store(client["nowhere"])
