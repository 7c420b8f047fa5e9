"""Acquisition strategies on committee energies with a known structure."""

import numpy as np
import pytest

from mfal.select import SelectionError, select_images


def committee_energies(n_images=9, n_members=6, seed=0, noisy_images=(), offset_spread=5.0):
    """A barrier profile; each member has its own large offset, chosen images extra member noise."""
    rng = np.random.default_rng(seed)
    profile = np.sin(np.linspace(0, np.pi, n_images)) * 0.4
    energies = profile[:, None] + rng.normal(0, offset_spread, n_members)[None, :]
    energies += rng.normal(0, 0.002, (n_images, n_members))
    for index, size in noisy_images:
        energies[index] += rng.normal(0, size, n_members)
    return energies


def test_barrier_variance_picks_the_uncertain_saddle_and_the_initial_state():
    energies = committee_energies(noisy_images=[(4, 0.2), (7, 0.3)])
    selection = select_images(energies, 2)
    # Image 7 is uncertain but irrelevant to the barrier; a common member offset is
    # not information the refit can use, so the saddle needs its reference, image 0.
    assert set(selection.indices) == {0, 4}
    assert selection.barrier_std_after < 0.2 * selection.barrier_std_before


def test_spread_baseline_picks_the_largest_spread_first_and_ignores_the_barrier():
    energies = committee_energies(noisy_images=[(4, 0.2), (7, 0.3)])
    energies -= energies.mean(axis=0)  # spread baseline on offset-free energies
    assert select_images(energies, 2, strategy="spread").indices == [7, 4]


def test_labelled_images_are_never_picked_and_condition_the_prior():
    energies = committee_energies(noisy_images=[(4, 0.2)])
    labelled = np.zeros(9, bool)
    labelled[[0, 4]] = True
    for strategy in ("barrier_variance", "spread", "random", "all"):
        picked = select_images(energies, 3, strategy=strategy, labelled=labelled).indices
        assert not set(picked) & {0, 4}
    selection = select_images(energies, 1, labelled=labelled)
    unlabelled = select_images(energies, 1)
    assert selection.barrier_std_before < unlabelled.barrier_std_before


def test_batch_size_is_capped_by_the_candidates():
    energies = committee_energies(n_images=5)
    labelled = [True, True, False, False, True]
    assert sorted(select_images(energies, 10, labelled=labelled).indices) == [2, 3]
    assert select_images(energies, 10, strategy="all", labelled=labelled).indices == [2, 3]
    assert select_images(energies, 0).indices == []


def test_random_is_reproducible_with_a_seed():
    energies = committee_energies()
    first = select_images(energies, 3, strategy="random", seed=7).indices
    assert first == select_images(energies, 3, strategy="random", seed=7).indices
    assert len(set(first)) == 3


def test_spread_with_min_distance_skips_near_duplicates():
    energies = np.zeros((4, 3))
    energies[:, 1] = [0.0, 0.30, 0.29, 0.1]
    positions = [np.zeros((2, 3)), np.zeros((2, 3)), np.full((2, 3), 0.01), np.ones((2, 3))]
    picked = select_images(energies, 2, strategy="spread", positions=positions, min_distance=0.1).indices
    assert picked == [1, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "greedy"}, "unknown acquisition strategy 'greedy'"),
        ({"k": -1}, "k must be >= 0"),
        ({"labelled": [True]}, "labelled has 1 entries"),
        ({"saddle_index": 12}, "must be images of the 9"),
        ({"noise": 0.0}, "must be > 0"),
        ({"strategy": "spread", "min_distance": 0.5}, "needs the image positions"),
    ],
)
def test_bad_input(kwargs, message):
    arguments = {"k": 2, **kwargs}
    with pytest.raises(SelectionError, match=message):
        select_images(committee_energies(), **arguments)


def test_a_downhill_path_measures_the_barrier_to_its_highest_other_image():
    energies = committee_energies(noisy_images=[(3, 0.2)])
    energies[0] += 1.0  # the initial state is now the highest image
    selection = select_images(energies, 2, saddle_index=0)
    # The highest other image is 4 (the profile's top); it and its reference are measured.
    assert set(selection.indices) == {0, 4} and selection.barrier_std_after < 0.5 * selection.barrier_std_before


def test_non_finite_energies_are_rejected():
    energies = committee_energies()
    energies[2, 1] = np.nan
    with pytest.raises(SelectionError, match="NaN"):
        select_images(energies, 2)
