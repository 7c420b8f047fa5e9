"""The mfal command as a user runs it: real subprocesses, real database."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

MFAL = str(Path(sys.executable).parent / "mfal")


def run_mfal(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([MFAL, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mfal: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_history_table_and_json(store, launchpad_file, mongo_client, database_name):
    from mfal.store import Store

    target_store = Store(mongo_client[database_name])
    target_store.put_campaign("demo", {"system": "h3"})
    start = datetime(2026, 1, 1)
    target_store.put_cycle("demo", 0, state="COMPLETED", barrier=0.1634, barrier_spread=0.0123,
                           label_ids=["x"], started_at=start, finished_at=start + timedelta(seconds=12.5))
    table = run_mfal("history", "demo", "-l", str(launchpad_file))
    assert table.returncode == 0, table.stderr
    assert "0.1634" in table.stdout and "0.0123" in table.stdout and "12.5" in table.stdout
    plotted = run_mfal("history", "demo", "--plot", "-l", str(launchpad_file))
    assert plotted.returncode == 0 and "0.1634" in plotted.stdout and len(plotted.stdout) > len(table.stdout)
    rows = json.loads(run_mfal("history", "demo", "--json", "-l", str(launchpad_file)).stdout)
    assert rows[0]["barrier"] == 0.1634 and rows[0]["n_labels"] == 1
    listing = run_mfal("campaign", "list", "--json", env_extra={"MFAL_LAUNCHPAD": str(launchpad_file)})
    assert [c["campaign"] for c in json.loads(listing.stdout)] == ["demo"]


def test_unknown_campaign(launchpad_file):
    assert_one_line_error(run_mfal("history", "nope", "-l", str(launchpad_file)), "unknown campaign 'nope'")


def test_unreachable_uri_is_clear_and_hides_the_password():
    result = run_mfal(
        "history", "x", env_extra={"MFAL_MONGO_URI": "mongodb://alice:s3cret@127.0.0.1:9/db", "MFAL_DB_TIMEOUT_MS": "300"}
    )
    assert_one_line_error(result, "cannot reach MongoDB", "MFAL_MONGO_URI")
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("host: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping, not list"),
        ("host: localhost\nport: notanumber\n", "port must be an integer"),
        ("hots: localhost\n", "unknown key(s) ['hots']"),
    ],
)
def test_malformed_launchpad_file(tmp_path, content, fragment):
    path = tmp_path / "lp.yaml"
    path.write_text(content)
    assert_one_line_error(run_mfal("history", "x", "-l", str(path)), fragment)


def test_missing_launchpad_file(tmp_path):
    assert_one_line_error(run_mfal("campaign", "list", "-l", str(tmp_path / "none.yaml")), "does not exist")


def test_db_commands_and_launchpad_file(tmp_path):
    env = {"MFAL_HOME": str(tmp_path / "home")}
    try:
        started = run_mfal("db", "start", env_extra=env)
        assert started.returncode == 0 and "running at mongodb://127.0.0.1:" in started.stdout
        status = run_mfal("db", "status", env_extra=env)
        assert "running" in status.stdout and "since" in status.stdout
        written = run_mfal("db", "launchpad-file", str(tmp_path / "my_launchpad.yaml"), env_extra=env)
        assert written.returncode == 0
        record = yaml.safe_load((tmp_path / "my_launchpad.yaml").read_text())
        assert f"{record['port']}" in status.stdout
        # A my_launchpad.yaml in the working directory is found the way FireWorks finds it.
        listing = run_mfal("campaign", "list", cwd=tmp_path, env_extra=env)
        assert listing.returncode == 0 and "no campaigns" in listing.stdout
        assert_one_line_error(run_mfal("db", "launchpad-file", str(tmp_path / "my_launchpad.yaml"), env_extra=env),
                              "already exists")
    finally:
        stopped = run_mfal("db", "stop", env_extra=env)
    assert "stopped" in stopped.stdout
    assert "stopped" in run_mfal("db", "status", env_extra=env).stdout
