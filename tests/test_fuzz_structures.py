"""Malformed, empty and inconsistent structure files: a structure or one clear ConfigError, never a traceback."""

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfal.errors import ConfigError
from mfal.structures import read_endpoints, read_structure, read_structures
from mfal.systems import h3_endpoints
from tests.campaign_helpers import store_and_launchpad, tiny_h3_document
from tests.test_fuzz_config import run_cli, write_document

FORMATS = {"xyz": "extxyz", "extxyz": "extxyz", "vasp": "vasp", "cif": "cif", "traj": "traj"}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def structure_bytes(atoms: Atoms, suffix: str, directory) -> bytes:
    path = directory / f"intact.{suffix}"
    write(path, atoms, format=FORMATS[suffix])
    return path.read_bytes()


def cell_structure() -> Atoms:
    atoms = Atoms("MoS2", positions=[[0, 0, 0], [1.6, 0.9, 1.5], [1.6, 0.9, -1.5]],
                  cell=[[3.2, 0, 0], [-1.6, 2.77, 0], [0, 0, 20]], pbc=True)
    return atoms


def assert_usable(atoms: Atoms):
    """What every successful read must give: atoms with finite positions."""
    assert isinstance(atoms, Atoms) and len(atoms) > 0
    assert np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()


@FUZZ
@given(suffix=st.sampled_from(sorted(FORMATS)), cut=st.floats(0, 1), garbage=st.binary(max_size=40),
       keep_tail=st.booleans())
def test_damaged_structure_files_read_or_fail_clearly(tmp_path, suffix, cut, garbage, keep_tail):
    intact = structure_bytes(cell_structure(), suffix, tmp_path)
    offset = int(cut * len(intact))
    damaged = intact[:offset] + garbage + (intact[offset:] if keep_tail else b"")
    path = tmp_path / f"damaged.{suffix}"
    path.write_bytes(damaged)
    for reader in (read_structure, read_structures):
        try:
            result = reader(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
        else:
            for atoms in result if isinstance(result, list) else [result]:
                assert_usable(atoms)


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty.{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match="is empty"):
        read_structure(path)
    with pytest.raises(ConfigError, match=f"structure file {path}"):
        read_structures(path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_coordinates(tmp_path, bad):
    path = tmp_path / "bad.xyz"
    path.write_text(f"2\n\nH 0 0 0\nH 0 0 {bad}\n")
    with pytest.raises(ConfigError, match="non-finite"):
        read_structure(path)
    with pytest.raises(ConfigError, match="non-finite"):
        read_structures(path)


def write_pair(tmp_path, initial: Atoms, final: Atoms):
    paths = tmp_path / "initial.xyz", tmp_path / "final.xyz"
    for path, atoms in zip(paths, (initial, final)):
        write(path, atoms, format="extxyz")
    return paths


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a[:2], "differ in atom count"),
        (lambda a: Atoms("HHLi", positions=a.positions), "different elements or a different atom order"),
        (lambda a: Atoms(a.symbols, positions=a.positions, cell=[10, 10, 10], pbc=True), "different cells"),
    ],
    ids=["atom count", "composition", "cell"],
)
def test_inconsistent_endpoints(tmp_path, edit, message):
    initial, final = h3_endpoints()
    with pytest.raises(ConfigError, match=message):
        read_endpoints(*write_pair(tmp_path, initial, edit(final)))


def test_reordered_endpoints(tmp_path):
    initial = Atoms("HLiH", positions=[[0, 0, 0], [2, 0, 0], [4, 0, 0]])
    final = Atoms("LiHH", positions=[[2, 0, 0], [0, 0, 0], [4.5, 0, 0]])
    with pytest.raises(ConfigError, match="different atom order"):
        read_endpoints(*write_pair(tmp_path, initial, final))


@pytest.mark.parametrize(
    "final_text, fragment",
    [
        ("", "is empty"),
        ("3\n\nH 0 0 0\nH 0 0\n", "could not be read"),
        ("2\n\nH 0 0 0\nH 0 0 0.74\n", "differ in atom count"),
        ("3\n\nH 0 0 0\nH 0 0 0.74\nLi 0 0 3.5\n", "different elements"),
    ],
    ids=["empty", "truncated", "atom count", "composition"],
)
def test_files_system_with_bad_endpoints_adds_nothing(committee_file, launchpad_file, tmp_path, monkeypatch, capsys,
                                                      final_text, fragment):
    initial = tmp_path / "initial.xyz"
    write(initial, h3_endpoints()[0], format="extxyz")
    final = tmp_path / "final.xyz"
    final.write_text(final_text)
    document = tiny_h3_document("files", committee_file,
                                system={"kind": "files", "initial": str(initial), "final": str(final)})
    status, _, err = run_cli(monkeypatch, capsys, "campaign", "add", str(write_document(tmp_path, document, 0)),
                             "-l", str(launchpad_file))
    assert status == 1 and err.startswith("mfal: error: ") and fragment in err and len(err.splitlines()) == 1, err
    store, launchpad = store_and_launchpad(launchpad_file)
    assert launchpad.fireworks.count_documents({}) == store.campaigns.count_documents({}) == 0
