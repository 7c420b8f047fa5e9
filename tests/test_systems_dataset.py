"""Resumable extxyz datasets and the GPAW k-grid rule (no GPAW needed for either)."""

import json

import numpy as np
import pytest

from mfal.hashing import settings_hash
from mfal.systems import SystemSpecError, h3_chain, mos2_monolayer, mos2_vacancy_endpoints
from mfal.systems.dataset import append_frame, done_ids, kept_split, labelled_frame, read_dataset, split_ids
from mfal.systems.gpaw_reference import kpoint_grid, label_settings


def test_append_and_resume_round_trip(tmp_path):
    path = tmp_path / "set.extxyz"
    assert read_dataset(path) == [] and done_ids(path) == set()
    settings = {"code": "test", "basis": "cc-pVDZ", "spin": 1}
    for k in range(3):
        atoms = h3_chain(0.8 + 0.1 * k, 1.5)
        forces = np.full((3, 3), 0.1 * k)
        append_frame(path, labelled_frame(atoms, -40.0 - k, forces, f"c{k}", settings, kind="test"))
    frames = read_dataset(path)
    assert done_ids(path) == {"c0", "c1", "c2"}
    assert frames[2].get_potential_energy() == pytest.approx(-42.0)
    assert frames[2].get_forces() == pytest.approx(np.full((3, 3), 0.2))
    assert frames[1].info["basis"] == "cc-pVDZ"
    assert frames[1].info["settings_hash"] == settings_hash(settings)
    assert frames[1].get_distance(0, 1) == pytest.approx(0.9)


def test_kept_splits_are_found_by_config_id_however_the_dataset_grew(tmp_path):
    settings = {"code": "test"}
    frames = [labelled_frame(h3_chain(0.8 + 0.05 * k, 1.5), -40.0, np.zeros((3, 3)), f"c{k}", settings) for k in range(6)]
    splits_file = tmp_path / "splits.json"
    assert kept_split(frames, splits_file) is None
    splits_file.write_text(json.dumps(split_ids(frames, {"test": [4, 1], "valid": [0]})))
    grown = [frames[5], *frames[:5], labelled_frame(h3_chain(1.0, 2.0), -41.0, np.zeros((3, 3)), "new", settings)]
    assert kept_split(grown, splits_file) == {"test": [5, 2], "valid": [1]}
    with pytest.raises(SystemSpecError, match="c4.*--new-split"):
        kept_split(frames[:4], splits_file)


def test_labelled_frame_rejects_wrong_force_shape_and_key_clash():
    atoms = h3_chain(1.0, 1.0)
    with pytest.raises(SystemSpecError, match="shape"):
        labelled_frame(atoms, 0.0, np.zeros((2, 3)), "x", {})
    with pytest.raises(SystemSpecError, match="clash"):
        labelled_frame(atoms, 0.0, np.zeros((3, 3)), "x", {"kind": "a"}, kind="b")


def test_kpoint_grid_scales_with_supercell():
    assert kpoint_grid(mos2_vacancy_endpoints((3, 3))[0]) == (2, 2, 1)
    assert kpoint_grid(mos2_monolayer((1, 1))) == (6, 6, 1)
    assert kpoint_grid(mos2_monolayer((6, 4))) == (1, 2, 1)
    assert label_settings(mos2_monolayer((3, 3)))["kpts"] == "2x2x1"


@pytest.mark.parametrize("strain", [-0.02, -0.01, 0.01, 0.02])
def test_strained_cell_keeps_the_grid_of_its_supercell(strain):
    atoms = mos2_monolayer((3, 3))
    atoms.set_cell(atoms.cell.array * [[1 + strain], [1 + strain], [1]], scale_atoms=True)
    assert kpoint_grid(atoms) == (2, 2, 1)


def test_kpoint_grid_needs_a_slab():
    with pytest.raises(SystemSpecError, match="slab"):
        kpoint_grid(h3_chain(1.0, 1.0))
