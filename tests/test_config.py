"""Campaign config validation: every error names the key, the value and what is allowed."""

import copy

import pytest
import yaml

from mfal.config import config_from_dict, load_config
from mfal.errors import ConfigError


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    from mfal.potentials import Committee, default_architecture

    path = tmp_path_factory.mktemp("committee") / "h3.pt"
    Committee.from_architecture(default_architecture([1], [-13.6], 2.0, channels=4), 4).save(path)
    return path


@pytest.fixture
def document(committee_file):
    return {
        "name": "test-h3",
        "system": {"kind": "h3"},
        "committee": {"files": [str(committee_file)]},
        "qmc": {"backend": "surrogate", "calculator": "ase.calculators.emt:EMT", "noise_sigma_eV": 0.01},
    }


def test_a_minimal_config_gets_documented_defaults(document):
    config = config_from_dict(document)
    assert config.neb.n_images == 7 and config.acquisition.strategy == "barrier_variance"
    assert config.convergence.max_labels == 15 and config.fireworks.qmc_category == "qmc"


def test_relative_paths_are_taken_from_the_config_file(document, committee_file, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "c.pt").write_bytes(committee_file.read_bytes())
    document["committee"]["files"] = ["models/c.pt"]
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(document))
    assert load_config(path).committee.files == [tmp_path / "models" / "c.pt"]


def test_environment_variables_in_paths(document, committee_file, monkeypatch):
    monkeypatch.setenv("MFAL_TEST_MODELS", str(committee_file.parent))
    document["committee"]["files"] = [f"$MFAL_TEST_MODELS/{committee_file.name}"]
    assert config_from_dict(document).committee.files == [committee_file]


def mutate(document, dotted, value):
    changed = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    block = changed
    for key in parents:
        block = block.setdefault(key, {})
    if value is KeyError:
        del block[last]
    else:
        block[last] = value
    return changed


@pytest.mark.parametrize(
    "dotted, value, fragments",
    [
        ("name", KeyError, ["key 'name' is missing"]),
        ("system", KeyError, ["key 'system' is missing"]),
        ("system.kind", "h4", ["system", "'h4'", "h3", "mos2", "files"]),
        ("acquisition.batch_size", 0, ["key 'acquisition.batch_size' = 0", "greater than or equal to 1"]),
        ("acquisition.batch_size", "three", ["acquisition.batch_size", "'three'", "integer"]),
        ("acquisition.strategy", "greedy", ["acquisition.strategy", "'greedy'", "barrier_variance, spread"]),
        ("neb.fmax", -1, ["neb.fmax", "greater than 0"]),
        ("neb.optimiser", "FIRE", ["key 'neb.optimiser' is not allowed here"]),
        ("committee.files", ["/nonexistent/model.pt"], ["committee", "/nonexistent/model.pt does not exist"]),
        ("committee.shipped", "nope", ["exactly one of 'shipped'"]),
        ("committee.anchors", "/nonexistent/train.xyz", ["anchor structure file /nonexistent/train.xyz does not exist"]),
        ("convergence.max_labels", 0, ["convergence.max_labels"]),
        ("qmc.backend", "vasp", ["qmc", "'vasp'"]),
        ("name", "bad name!", ["key 'name'", "'bad name!'", "pattern"]),
    ],
)
def test_errors_name_key_value_and_what_is_allowed(document, dotted, value, fragments):
    with pytest.raises(ConfigError) as error:
        config_from_dict(mutate(document, dotted, value))
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


def test_files_system_needs_existing_structures(document):
    document["system"] = {"kind": "files", "initial": "/nonexistent/a.xyz", "final": "/nonexistent/b.xyz"}
    with pytest.raises(ConfigError, match="structure file /nonexistent/a.xyz does not exist"):
        config_from_dict(document)


@pytest.mark.parametrize("content, fragment", [("name: [", "not valid YAML"), ("- 1\n", "must hold a mapping, not list")])
def test_malformed_files(tmp_path, content, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
