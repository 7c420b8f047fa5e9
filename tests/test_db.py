"""The embedded SecantusDB server: idempotent start, clean stop, status, persistence."""

from pymongo import MongoClient

from mfal.db import EmbeddedServer


def test_start_is_idempotent_and_stop_is_clean(tmp_path):
    server = EmbeddedServer(state_dir=tmp_path / "state", storage_path=tmp_path / "storage")
    first = server.start()
    try:
        assert first.running and first.port and first.pid
        again = server.start()
        assert (again.pid, again.port) == (first.pid, first.port)
        assert "running at mongodb://127.0.0.1:" in server.status().describe()
        assert "since" in server.status().describe()
    finally:
        assert server.stop() is True
    status = server.status()
    assert not status.running and status.pid is None
    assert "stopped" in status.describe()
    assert server.stop() is False


def test_records_survive_a_restart_on_the_same_storage(tmp_path):
    server = EmbeddedServer(state_dir=tmp_path / "state", storage_path=tmp_path / "storage")
    uri = server.start().uri
    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    client.mfal.things.insert_many([{"i": i} for i in range(50)])
    client.close()
    server.stop()

    restarted = EmbeddedServer(state_dir=tmp_path / "state")
    status = restarted.start()
    try:
        assert status.port == int((tmp_path / "state" / "db.port").read_text())
        assert status.uri == uri, "a restart reuses the port so launchpad files stay valid"
        client = MongoClient(status.uri, serverSelectionTimeoutMS=5000)
        assert sorted(d["i"] for d in client.mfal.things.find()) == list(range(50))
        client.close()
    finally:
        restarted.stop()
