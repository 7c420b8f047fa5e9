"""SCRAM authentication on the embedded server: ``mfal db start --auth`` and everything that connects to it."""

import stat

import bson
import pytest
import yaml
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from mfal.db import EmbeddedServer
from mfal.errors import DatabaseError
from mfal.paths import write_private_text
from tests.campaign_helpers import mfal, tiny_h3_document, write_config
from tests.test_cli import assert_one_line_error, run_mfal


def private(path):
    return stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture(scope="module")
def auth_home(tmp_path_factory):
    """An ``$MFAL_HOME`` whose embedded server was started with ``mfal db start --auth``."""
    home = tmp_path_factory.mktemp("auth") / "home"
    started = run_mfal("db", "start", "--auth", env_extra={"MFAL_HOME": str(home)})
    assert started.returncode == 0, started.stderr
    yield home
    EmbeddedServer(state_dir=home).stop()


@pytest.fixture(scope="module")
def credentials(auth_home):
    return EmbeddedServer(state_dir=auth_home).credentials()


def client(port, **login):
    return MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=5000, **login)


def test_start_provisions_a_scram_user_kept_private(auth_home, credentials):
    status = EmbeddedServer(state_dir=auth_home).status()
    assert status.running and status.auth
    assert credentials.mechanism == "SCRAM-SHA-256" and len(credentials.password) >= 32
    assert private(auth_home / "db.credentials.yaml")
    described = run_mfal("db", "status", env_extra={"MFAL_HOME": str(auth_home)})
    assert described.returncode == 0 and "authentication on (SCRAM-SHA-256" in " ".join(described.stdout.split())
    assert credentials.password not in described.stdout + described.stderr


def test_authenticated_client_reads_and_writes_others_are_refused(auth_home, credentials):
    port = EmbeddedServer(state_dir=auth_home).status().port
    login = dict(username=credentials.username, authSource="admin", authMechanism="SCRAM-SHA-256")
    with client(port, password=credentials.password, **login) as authenticated:
        authenticated.auth_test.things.insert_one({"x": 1})
        assert authenticated.auth_test.things.find_one({}, {"_id": 0}) == {"x": 1}
        with client(port) as anonymous, pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.auth_test.things.find_one()
        with client(port, password="not-the-password", **login) as wrong, \
                pytest.raises(OperationFailure, match="authentication failed"):
            wrong.admin.command("ping")
        authenticated.drop_database("auth_test")


def test_cli_uses_the_credentials_and_refuses_a_launchpad_without_them(auth_home, credentials, tmp_path):
    env = {"MFAL_HOME": str(auth_home)}
    assert run_mfal("campaign", "list", env_extra=env).stdout.startswith("no campaigns")
    port = EmbeddedServer(state_dir=auth_home).status().port
    anonymous = tmp_path / "anonymous.yaml"
    anonymous.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": port, "name": "mfal"}))
    refused = run_mfal("campaign", "list", "-l", str(anonymous), env_extra=env)
    assert_one_line_error(refused, "requires authentication", "'username' and 'password'")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": port, "name": "mfal", "username": "mfal",
                                     "password": "WrongPassword-7731", "authsource": "admin"}))
    rejected = run_mfal("history", "x", "-l", str(wrong), env_extra=env)
    assert_one_line_error(rejected, "authentication failed", "refused the username and password")
    assert "WrongPassword-7731" not in rejected.stderr


def test_fireworks_launchpad_works_through_the_written_launchpad_file(auth_home, credentials, tmp_path):
    from fireworks import Firework, LaunchPad

    path = tmp_path / "my_launchpad.yaml"
    written = run_mfal("db", "launchpad-file", str(path), env_extra={"MFAL_HOME": str(auth_home)})
    assert written.returncode == 0 and credentials.password not in written.stdout
    assert private(path)
    record = yaml.safe_load(path.read_text())
    assert (record["username"], record["password"]) == (credentials.username, credentials.password)
    launchpad = LaunchPad.from_file(str(path))
    launchpad.reset("", require_password=False)
    fw_id = launchpad.add_wf(Firework([], name="auth check"))
    assert launchpad.get_fw_by_id(next(iter(fw_id.values()))).name == "auth check"
    launchpad.connection.drop_database(record["name"])


def test_local_worker_gets_the_credentials_in_a_private_temporary_file(auth_home, credentials, monkeypatch):
    from fireworks import LaunchPad

    from mfal.connection import resolve_target
    from mfal.runner import worker_launchpad_file

    monkeypatch.setenv("MFAL_HOME", str(auth_home))
    target = resolve_target()
    assert target.source == "embedded server" and credentials.password not in target.describe()
    with worker_launchpad_file(target) as path:
        assert private(path) and yaml.safe_load(path.read_text())["password"] == credentials.password
        status = LaunchPad.from_file(str(path)).db.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == [{"user": credentials.username, "db": "admin"}]
    assert not path.exists()


def test_restart_keeps_auth_on_with_the_same_user(tmp_path):
    server = EmbeddedServer(state_dir=tmp_path / "home", storage_path=tmp_path / "storage")
    server.start(auth=True)
    first = server.credentials()
    server.stop()
    restarted = EmbeddedServer(state_dir=tmp_path / "home")
    status = restarted.start()
    try:
        assert status.auth and restarted.credentials() == first
        with client(status.port) as anonymous, pytest.raises(OperationFailure, match="requires authentication"):
            anonymous.mfal.things.insert_one({"x": 1})
        with client(status.port, username=first.username, password=first.password, authSource="admin") as login:
            login.mfal.things.insert_one({"x": 1})
    finally:
        restarted.stop()


def test_auth_cannot_be_turned_on_under_a_running_open_server(tmp_path):
    server = EmbeddedServer(state_dir=tmp_path / "home", storage_path=tmp_path / "storage")
    status = server.start()
    try:
        assert not status.auth and "authentication off" in status.describe()
        with pytest.raises(DatabaseError, match="running without authentication"):
            server.start(auth=True)
        assert not (tmp_path / "home" / "db.credentials.yaml").exists()
    finally:
        server.stop()


def files_containing(root, secret):
    return sorted(str(path) for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes())


def documents_containing(client, secret):
    """Every document of every collection on the server, as BSON bytes, that holds the secret."""
    found = []
    for database in client.list_database_names():
        for collection in client[database].list_collection_names():
            for document in client[database][collection].find():
                if secret.encode() in bson.encode(document):
                    found.append(f"{database}.{collection} {document.get('_id')}")
    return found


@pytest.mark.slow
def test_credentials_never_reach_logs_output_or_documents(auth_home, credentials, committee_file, tmp_path):
    secret = credentials.password
    port = EmbeddedServer(state_dir=auth_home).status().port
    launchpad_path = tmp_path / "auth_launchpad.yaml"  # not my_launchpad.yaml: the URI commands below must use the URI
    assert run_mfal("db", "launchpad-file", str(launchpad_path), env_extra={"MFAL_HOME": str(auth_home)}).returncode == 0
    record = yaml.safe_load(launchpad_path.read_text())
    write_private_text(launchpad_path, yaml.safe_dump({**record, "name": "leak_check"}))
    config = write_config(tmp_path, tiny_h3_document("leak", committee_file))
    outputs = [mfal(tmp_path, "campaign", "run", str(config), "-l", str(launchpad_path))]
    assert outputs[0].returncode == 0, outputs[0].stderr[-3000:]
    uri = f"mongodb://{credentials.username}:{secret}@127.0.0.1:{port}/leak_check?authSource=admin"
    env = {"MFAL_HOME": str(tmp_path / "home"), "MFAL_MONGO_URI": uri}
    outputs += [run_mfal("history", "leak", env_extra=env, cwd=tmp_path),
                run_mfal("history", "leak", "--json", "--plot", env_extra=env, cwd=tmp_path),
                run_mfal("campaign", "list", env_extra=env, cwd=tmp_path)]
    assert all(result.returncode == 0 for result in outputs) and "leak" in outputs[-1].stdout
    unreachable = {**env, "MFAL_MONGO_URI": uri.replace(str(port), "9"), "MFAL_DB_TIMEOUT_MS": "300"}
    failed = run_mfal("history", "leak", env_extra=unreachable, cwd=tmp_path)
    assert_one_line_error(failed, "cannot reach MongoDB")
    for result in [*outputs, failed]:
        assert secret not in result.stdout + result.stderr
    assert files_containing(tmp_path, secret) == [str(launchpad_path)]
    assert files_containing(auth_home, secret) == [str(auth_home / "db.credentials.yaml")]
    assert (tmp_path / "home" / "launches" / "leak" / "rlaunch.log").stat().st_size > 0
    with client(port, username=credentials.username, password=secret, authSource="admin") as admin:
        assert {"fireworks", "workflows", "launches", "mfal_labels"} <= set(admin.leak_check.list_collection_names())
        assert documents_containing(admin, secret) == []
        admin.drop_database("leak_check")
