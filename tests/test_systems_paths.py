"""Path builders: atom counts, vacancy sites, image counts, endpoint equivalence, hop distance."""

import numpy as np
import pytest
from ase.geometry import get_distances

from mfal.systems import (
    H2_BOND,
    MOS2_LATTICE,
    SystemSpecError,
    h3_chain,
    h3_endpoints,
    h3_path,
    mos2_divacancy_endpoints,
    mos2_divacancy_path,
    mos2_monolayer,
    mos2_vacancy_endpoints,
    mos2_vacancy_path,
    vacancy_final_by_translation,
)


def _bonds(atoms):
    return atoms.get_distance(0, 1), atoms.get_distance(1, 2)


def _sorted_distances(atoms):
    """All interatomic distances under the minimum-image convention: a fingerprint
    that is unchanged by any symmetry operation of the cell."""
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return np.sort(d[np.triu_indices(len(atoms), 1)])


def _top_sulfur_sites(atoms):
    z_mo = atoms.positions[atoms.numbers == 42, 2].mean()
    return atoms.positions[(atoms.numbers == 16) & (atoms.positions[:, 2] > z_mo)]


def test_h3_endpoints_are_h2_plus_far_h_mirrored():
    reactant, product = h3_endpoints(r_far=3.0)
    assert _bonds(reactant) == pytest.approx((3.0, H2_BOND))
    assert _bonds(product) == pytest.approx((H2_BOND, 3.0))
    assert reactant.get_chemical_formula() == product.get_chemical_formula() == "H3"
    assert not reactant.pbc.any()


def test_h3_path_image_count_and_symmetric_midpoint():
    images = h3_path(n_intermediate=7)
    assert len(images) == 9
    r1, r2 = _bonds(images[4])
    assert r1 == pytest.approx(r2)
    assert all(len(image) == 3 for image in images)


def test_h3_chain_angle():
    atoms = h3_chain(1.0, 1.5, angle=90.0)
    assert atoms.get_angle(0, 1, 2) == pytest.approx(90.0)
    assert _bonds(atoms) == pytest.approx((1.0, 1.5))


@pytest.mark.parametrize(
    "kwargs", [dict(r1=-1.0, r2=1.0), dict(r1=1.0, r2=1.0, angle=0.0), dict(r1=1.0, r2=1.0, angle=200)]
)
def test_h3_chain_rejects_bad_geometry(kwargs):
    with pytest.raises(SystemSpecError):
        h3_chain(**kwargs)


def test_h3_endpoints_reject_far_shorter_than_bond():
    with pytest.raises(SystemSpecError, match="r_far"):
        h3_endpoints(r_far=0.5)


def test_mos2_pristine_cell():
    atoms = mos2_monolayer((3, 3))
    assert len(atoms) == 27
    assert atoms.get_chemical_formula() == "Mo9S18"
    assert atoms.cell.lengths()[0] == pytest.approx(3 * MOS2_LATTICE)
    z = atoms.positions[:, 2]
    assert atoms.cell[2, 2] - (z.max() - z.min()) >= 15.0 - 1e-9


def test_mos2_vacancy_endpoints_counts_site_and_hop():
    initial, final = mos2_vacancy_endpoints((3, 3))
    assert len(initial) == len(final) == 26
    assert initial.get_chemical_formula() == final.get_chemical_formula() == "Mo9S17"
    mover = initial.info["moving_index"]
    vacancy = initial.info["vacancy_position"]
    # the vacancy is an empty top-layer S site in the initial state, filled by the mover in the final
    assert np.min(np.linalg.norm(_top_sulfur_sites(initial) - vacancy, axis=1)) > 1.0
    assert final.positions[mover] == pytest.approx(vacancy)
    hop = final.positions[mover] - initial.positions[mover]
    assert np.linalg.norm(hop) == pytest.approx(MOS2_LATTICE)
    assert hop[2] == pytest.approx(0.0)
    moved = np.linalg.norm(final.positions - initial.positions, axis=1) > 1e-9
    assert np.flatnonzero(moved).tolist() == [mover]


def test_mos2_vacancy_endpoints_are_translation_equivalent():
    initial, final = mos2_vacancy_endpoints((3, 3))
    mover = initial.info["moving_index"]
    shift = final.positions[mover] - initial.positions[mover]
    shifted = final.copy()
    shifted.translate(shift)  # carries the final vacancy (old site of the mover) onto the initial one
    _, d = get_distances(shifted.positions, initial.positions, cell=initial.cell, pbc=initial.pbc)
    same_element = shifted.numbers[:, None] == initial.numbers[None, :]
    nearest = np.where(same_element, d, np.inf).argmin(axis=1)
    assert sorted(nearest.tolist()) == list(range(len(initial)))
    assert d[np.arange(len(initial)), nearest].max() < 1e-6


def test_mos2_vacancy_path_images():
    images = mos2_vacancy_path(n_intermediate=5, size=(4, 3))
    assert len(images) == 7
    assert len({len(image) for image in images}) == 1
    mover = images[0].info["moving_index"]
    steps = [np.linalg.norm(b.positions[mover] - a.positions[mover]) for a, b in zip(images, images[1:])]
    assert steps == pytest.approx([MOS2_LATTICE / 6] * 6)


def test_mos2_divacancy_endpoints_mirror_equivalent():
    initial, final = mos2_divacancy_endpoints((3, 3))
    assert initial.get_chemical_formula() == final.get_chemical_formula() == "Mo9S16"
    mover = initial.info["moving_index"]
    assert np.linalg.norm(final.positions[mover] - initial.positions[mover]) == pytest.approx(MOS2_LATTICE)
    assert _sorted_distances(initial) == pytest.approx(_sorted_distances(final))
    # the two empty top-layer sites and the mover's start form a triangle of side a
    sites = _top_sulfur_sites(mos2_monolayer((3, 3)))
    _, d = get_distances(sites, _top_sulfur_sites(initial), cell=initial.cell, pbc=initial.pbc)
    empty = sites[d.min(axis=1) > 1.0]
    assert len(empty) == 2
    corners = np.vstack([empty, initial.positions[mover]])
    _, sides = get_distances(corners, cell=initial.cell, pbc=initial.pbc)
    assert sides[np.triu_indices(3, 1)] == pytest.approx([MOS2_LATTICE] * 3)
    assert len(mos2_divacancy_path(3)) == 5


@pytest.mark.parametrize("size", [(1, 3), (2, 0), (2.5, 3), "3x3"])
def test_mos2_vacancy_rejects_small_or_bad_size(size):
    with pytest.raises(SystemSpecError, match="size"):
        mos2_vacancy_endpoints(size)


def test_mos2_divacancy_needs_3x3():
    with pytest.raises(SystemSpecError, match=">= 3"):
        mos2_divacancy_endpoints((2, 2))


def test_mos2_rejects_thin_vacuum():
    with pytest.raises(SystemSpecError, match="vacuum"):
        mos2_monolayer(vacuum=5.0)


def test_vacancy_final_by_translation_maps_relaxed_initial_onto_equivalent_final():
    initial, final = mos2_vacancy_endpoints((3, 3))
    relaxed = initial.copy()
    relaxed.positions += np.random.default_rng(3).normal(scale=0.05, size=relaxed.positions.shape)
    mapped = vacancy_final_by_translation(relaxed, (3, 3))
    assert list(mapped.numbers) == list(final.numbers)
    # each atom of the mapped final state sits near its site in the unrelaxed final state ...
    _, d = get_distances(mapped.positions, final.positions, cell=final.cell, pbc=final.pbc)
    assert np.diag(d).max() < 0.3
    # ... and the mapped state is an exact symmetry image of the relaxed initial state
    assert _sorted_distances(mapped) == pytest.approx(_sorted_distances(relaxed), abs=1e-9)


def test_vacancy_final_by_translation_rejects_foreign_structure():
    with pytest.raises(SystemSpecError, match="vacancy cell"):
        vacancy_final_by_translation(mos2_monolayer((3, 3)), (3, 3))
