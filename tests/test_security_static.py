"""Static guarantees: every torch.load says weights_only explicitly, and workflow specs are plain JSON."""

import ast
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mfal"

#: The one place that unpickles: whole-model ``.model`` files from ``mace_run_train``, which are pickles by
#: design and only ever local files the user names; they are converted to state_dicts at once.
UNPICKLING_ALLOWED = {("mfal/potentials/committee.py", "from_mace_model_files")}


def torch_load_calls():
    """(file, enclosing function, weights_only keyword node or None) for every ``torch.load(...)`` in mfal."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    keyword = next((k for k in node.keywords if k.arg == "weights_only"), None)
                    calls.append((str(path.relative_to(REPO)), function.name, node.lineno, keyword))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch"):
                assert "load" not in {alias.name for alias in node.names}, f"{path}: import torch.load by name"
    return calls


def test_every_torch_load_passes_weights_only_true_explicitly():
    calls = torch_load_calls()
    assert len(calls) >= 3, "the scan found no torch.load calls: the scanner is broken"
    unpickling = set()
    for path, function, line, keyword in calls:
        assert keyword is not None, f"{path}:{line} ({function}) calls torch.load without weights_only"
        assert isinstance(keyword.value, ast.Constant), f"{path}:{line}: weights_only must be a literal"
        if keyword.value.value is not True:
            unpickling.add((path, function))
    assert unpickling == UNPICKLING_ALLOWED


def assert_plain_json(value, where):
    """Only dict/list/str/int/float/bool/None, with string keys: nothing a loader would have to unpickle."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: non-string key {key!r}"
            assert_plain_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_plain_json(item, f"{where}[{index}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{where}: {type(value).__name__}"


def assert_specs_plain(workflow: dict, where: str):
    assert workflow["fws"]
    for firework in workflow["fws"]:
        spec = firework["spec"]
        assert_plain_json(spec, f"{where} {firework['name']} spec")
        assert json.loads(json.dumps(spec)) == spec


@pytest.mark.parametrize("path", sorted((REPO / "workflows").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_workflow_files_hold_plain_json_specs(path):
    assert_specs_plain(yaml.safe_load(path.read_text()), path.name)  # safe_load: no python/object tags


def test_campaign_builders_make_plain_json_specs(tmp_path):
    from mfal.campaign import cycle_remainder, initial_workflow, select_firework
    from mfal.config import config_from_dict
    from tests.campaign_helpers import tiny_h3_document

    committee = tmp_path / "committee.pt"
    committee.write_bytes(b"only its existence is checked here")
    config = config_from_dict(tiny_h3_document("plain", committee))
    assert_specs_plain(initial_workflow(config).to_dict(), "initial workflow")
    assert_specs_plain({"fws": [select_firework(config, 0).to_dict()]}, "select")
    assert_specs_plain(cycle_remainder(config, 0, ["a" * 64, "b" * 64]).to_dict(), "cycle remainder")
