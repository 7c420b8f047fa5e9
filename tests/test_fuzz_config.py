"""Randomly damaged campaign configs: a valid config or one clear error, never a traceback, nothing stored."""

import copy
import logging
import sys

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mfal.config import load_config
from mfal.errors import MfalError
from tests.campaign_helpers import store_and_launchpad, tiny_h3_document
from tests.conftest import SHARED


STRINGS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["h3", "mos2", "files", "qmcpack", "pyqmc", "surrogate", "FIRE", "cuda:7", "/", "~", "$HOME", "..", "float32",
     "mfal.potentials.analytic:LEPSCalculator", "nope:nothing", "spread", "random"])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    STRINGS,
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=5,
)


def key_paths(document, prefix=()):
    """Every (nested) key of a document, as a tuple of keys and list indices."""
    items = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in items:
        yield (*prefix, key)
        if isinstance(value, (dict, list)):
            yield from key_paths(value, (*prefix, key))


def same_type_value(value):
    """A random value of the same JSON type: near-valid input that passes a type check."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(2**40), max_value=2**40) | st.sampled_from([0, -1, 1, 10**9])
    if isinstance(value, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(value, str):
        return STRINGS
    return VALUES


def mutate(document, data):
    """Apply 1-3 random mutations: delete a key, replace a value (often by one of its type), add an unknown key."""
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.sampled_from([1, 1, 2, 3]), label="mutations")):
        paths = list(key_paths(document))
        if not paths:
            break
        *parent_path, key = data.draw(st.sampled_from(paths), label="key")
        parent = document
        for part in parent_path:
            parent = parent[part]
        operation = data.draw(st.sampled_from(["delete", "replace", "perturb", "perturb", "add"]), label="operation")
        if operation == "delete":
            del parent[key]
        elif operation == "perturb":
            parent[key] = data.draw(same_type_value(parent[key]), label="value")
        elif operation == "replace":
            parent[key] = data.draw(VALUES, label="value")
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8), label="new key")] = data.draw(VALUES, label="value")
    return document


@pytest.fixture(scope="module")
def base_documents(committee_file, tmp_path_factory):
    """Valid documents for each system kind and QMC backend, to mutate."""
    from ase.io import write

    from mfal.systems import h3_endpoints

    directory = tmp_path_factory.mktemp("endpoints")
    for name, atoms in zip(("initial.xyz", "final.xyz"), h3_endpoints()):
        write(directory / name, atoms)
    return [
        tiny_h3_document("fuzz-h3", committee_file),
        tiny_h3_document("fuzz-files", committee_file,
                         system={"kind": "files", "initial": str(directory / "initial.xyz"),
                                 "final": str(directory / "final.xyz")}),
        tiny_h3_document("fuzz-mos2", committee_file, system={"kind": "mos2", "size": [2, 2]}),
        tiny_h3_document("fuzz-qmcpack", committee_file,
                         qmc={"backend": "qmcpack", "pseudo_dir": str(SHARED / "pseudopotentials")}),
        tiny_h3_document("fuzz-pyqmc", committee_file, qmc={"backend": "pyqmc"}),
    ]


def write_document(directory, document, index):
    path = directory / f"mutated_{index}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_load_config_gives_a_config_or_a_config_error(base_documents, tmp_path, data):
    document = mutate(data.draw(st.sampled_from(base_documents), label="base"), data)
    path = write_document(tmp_path, document, 0)
    try:
        load_config(path)
        event("valid")
    except MfalError as exc:
        event("config error")
        assert str(exc).strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), cut=st.integers(0, 2000))
def test_garbled_config_files_are_config_errors(base_documents, tmp_path, text, cut):
    path = tmp_path / "garbled.yaml"
    source = yaml.safe_dump(base_documents[0])
    path.write_text(source[:cut] + text)
    try:
        load_config(path)
    except MfalError as exc:
        assert str(exc)


def run_cli(monkeypatch, capsys, *args):
    """``mfal ARGS`` in this process, as the console script runs it: (exit status, stdout, stderr)."""
    from mfal.cli import main

    monkeypatch.setattr(sys, "argv", ["mfal", *args])
    # FireWorks' loggers keep the stream of the test that created them, closed by now: stay quiet about it.
    monkeypatch.setattr(logging, "raiseExceptions", False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_campaign_add_adds_a_valid_campaign_or_nothing(base_documents, launchpad_file, tmp_path, monkeypatch,
                                                       capsys, data):
    document = mutate(data.draw(st.sampled_from(base_documents), label="base"), data)
    path = write_document(tmp_path, document, 1)
    store, launchpad = store_and_launchpad(launchpad_file)
    before = (launchpad.fireworks.count_documents({}), store.campaigns.count_documents({}),
              store.models.count_documents({}))
    status, out, err = run_cli(monkeypatch, capsys, "campaign", "add", str(path), "-l", str(launchpad_file))
    event(f"exit status {status}")
    if status == 0:
        assert "added campaign" in out and err == ""
        launchpad.reset("", require_password=False)
        store.db.client.drop_database(store.db.name)
        return
    assert status == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mfal: error: "), err
    after = (launchpad.fireworks.count_documents({}), store.campaigns.count_documents({}),
             store.models.count_documents({}))
    assert after == before == (0, 0, 0)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"committee": {"device": "cuda:7"}}, "device 'cuda:7' is not available here"),
        ({"committee": {"device": "foo"}}, "device 'foo' is not a torch device"),
        ({"qmc": {"calculator": "nope:nothing"}}, "cannot import calculator 'nope:nothing'"),
        ({"qmc": {"calculator": ":"}}, "cannot import calculator ':'"),
        ({"qmc": {"calculator": "os:getcwd"}}, "returned a str, not an ASE calculator"),
        ({"qmc": {"calculator": "math:sqrt"}}, "failed: TypeError"),
        ({"committee": {"anchors": "ANCHORS", "max_anchors": 3}}, "could not be read"),
        ({"system": {"kind": "mos2", "size": [400, 400]}}, "system.size.0"),
        ({"system": {"kind": "h3", "far_distance": 1e300}}, "system.far_distance"),
        ({"neb": {"fmax": float("inf")}}, "neb.fmax"),
        ({"refit": {"force_weight": float("nan")}}, "refit.force_weight"),
    ],
)
def test_inputs_found_by_fuzzing_are_one_line_errors(committee_file, launchpad_file, tmp_path, monkeypatch, capsys,
                                                     change, fragment):
    if change.get("committee", {}).get("anchors") == "ANCHORS":
        change = {"committee": {**change["committee"], "anchors": str(committee_file)}}  # not a structure file
    path = write_document(tmp_path, tiny_h3_document("found", committee_file, **change), 2)
    status, _, err = run_cli(monkeypatch, capsys, "campaign", "add", str(path), "-l", str(launchpad_file))
    assert status == 1 and err.startswith("mfal: error: ") and fragment in err, err
    store, launchpad = store_and_launchpad(launchpad_file)
    assert launchpad.fireworks.count_documents({}) == store.campaigns.count_documents({}) == 0
