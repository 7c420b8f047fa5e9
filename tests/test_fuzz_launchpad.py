"""Randomly damaged launchpad files: a database or one clear error line, never a traceback, never the password."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_fuzz_config import mutate, run_cli

SECRET = "Fuzz-Secret-4471"


@pytest.fixture(scope="module")
def launchpad_document(mongo_uri):
    host, port = mongo_uri.removeprefix("mongodb://").split(":")
    return {"host": host, "port": int(port), "name": "fuzz_launchpad", "username": "nobody", "password": SECRET,
            "authsource": "admin", "uri_mode": False, "mongoclient_kwargs": {"serverSelectionTimeoutMS": 300}}


def uri_hosts(document):
    where = f"{document['host']}:{document['port']}"
    return st.sampled_from([f"mongodb://nobody:{SECRET}@{where}/fuzz", f"mongodb://nobody:{SECRET}@",
                            f"nobody:{SECRET}@{where}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_launchpad_file(launchpad_document, tmp_path, monkeypatch, capsys, data):
    monkeypatch.setenv("MFAL_DB_TIMEOUT_MS", "300")
    document = mutate(launchpad_document, data)
    kwargs = document.get("mongoclient_kwargs")
    if isinstance(kwargs, dict) and type(kwargs.get("serverSelectionTimeoutMS")) in (int, float):
        kwargs["serverSelectionTimeoutMS"] = 300  # a valid wait, kept short: an unreachable host costs that much
    if data.draw(st.booleans(), label="credentials in the host"):
        document["host"] = data.draw(uri_hosts(launchpad_document), label="host")
    path = tmp_path / "launchpad.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    status, out, err = run_cli(monkeypatch, capsys, "campaign", "list", "-l", str(path))
    assert SECRET not in out + err
    if status != 0:
        assert status == 1 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and err.startswith("mfal: error: "), err


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"mongoclient_kwargs": {"serverSelectionTimeoutMS": "abc"}}, "invalid MongoDB client settings"),
        ({"mongoclient_kwargs": {"tls": "maybe"}}, "invalid MongoDB client settings"),
        ({"password": 12345}, "'password' must be a non-empty string (quote it"),
        ({"username": 5}, "'username' must be a non-empty string"),
        ({"host": f"mongodb://nobody:{SECRET}@"}, "mongodb://nobody:***@"),
        ({"host": f"nobody:{SECRET}@127.0.0.1"}, "nobody:***@127.0.0.1"),
        ({"password": ""}, "'password' must be a non-empty string"),
    ],
)
def test_launchpad_inputs_found_by_fuzzing(launchpad_document, tmp_path, monkeypatch, capsys, change, fragment):
    path = tmp_path / "launchpad.yaml"
    path.write_text(yaml.safe_dump({**launchpad_document, **change}))
    status, out, err = run_cli(monkeypatch, capsys, "campaign", "list", "-l", str(path))
    assert status == 1 and err.startswith("mfal: error: ") and fragment in err, err
    assert SECRET not in out + err
