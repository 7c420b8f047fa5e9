"""Readout refit on a synthetic two-fidelity case with a known answer.

The low-fidelity committee is a tiny MACE model and two slightly perturbed
copies (a stand-in for a DFT-trained committee). The high fidelity is member 0
with changed readout output weights (a smooth correction whose force change on
the anchors is known), plus a constant offset, plus Gaussian noise of known sigma.
"""

import math
from copy import deepcopy

import numpy as np
import pytest
import torch
from ase import Atoms
from pydantic import ValidationError

from mfal.potentials import Committee, UnknownElementError, run_model
from mfal.potentials.refit import EnergyLabel, RefitInputError, refit_committee
from mfal.potentials.refit_linear import ATOMIC_ENERGIES_KEY, output_parameters
from mfal.potentials.refit_settings import RefitSettings
from tests.refit_helpers import cluster, tiny_architecture

SIGMA = 0.01
OFFSET_PER_ATOM = 10.0
TRUE_FORCE_RMS = 0.03


def with_weights(model, state_dict):
    """A copy of ``model`` holding ``state_dict`` (cheaper than building a new model)."""
    copy = deepcopy(model)
    copy.load_state_dict(state_dict)
    return copy


def perturbed(state_dict, rng, scale):
    return {
        name: tensor + scale * torch.as_tensor(rng.normal(size=tuple(tensor.shape)), dtype=tensor.dtype) * tensor.abs().mean()
        if tensor.is_floating_point() and name != ATOMIC_ENERGIES_KEY and tensor.dim() > 0
        else tensor.clone()
        for name, tensor in state_dict.items()
    }


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread; the previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def case(single_thread):
    rng = np.random.default_rng(7)
    architecture = tiny_architecture()
    (model,) = Committee.from_architecture(architecture, 1, min_members=1, device="cpu").models
    base = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    models = [model] + [with_weights(model, perturbed(base, rng, 0.02)) for _ in range(2)]
    committee = Committee(models, [architecture] * 3, min_members=3, device="cpu")

    structures = [cluster(rng) for _ in range(40)]
    anchors, pool = structures[:12], structures[12:]
    anchor_batch = committee.batch(anchors)
    names = list(output_parameters(model))
    direction = {name: torch.as_tensor(rng.normal(size=tuple(base[name].shape)), dtype=base[name].dtype) for name in names}
    unit = with_weights(model, {**base, **{name: base[name] + direction[name] for name in names}})
    deviation = run_model(unit, anchor_batch)["forces"] - run_model(model, anchor_batch)["forces"]
    scale = TRUE_FORCE_RMS / math.sqrt(float(torch.mean(deviation**2)))
    truth = {**base, **{name: base[name] + scale * direction[name] for name in names}}
    truth[ATOMIC_ENERGIES_KEY] = base[ATOMIC_ENERGIES_KEY] + OFFSET_PER_ATOM
    high = run_model(with_weights(model, truth), committee.batch(pool))["energy"].numpy()
    energies = high + rng.normal(0.0, SIGMA, len(pool))
    labels = [EnergyLabel(atoms, float(e), SIGMA, label_id=str(i)) for i, (atoms, e) in enumerate(zip(pool, energies))]
    return {
        "committee": committee,
        "weights": committee.state_dicts(),
        "labels": labels,
        "anchors": anchors,
    }


def rms_force_change(before: Committee, after: Committee, anchors) -> np.ndarray:
    old, new = before.evaluate(anchors), after.evaluate(anchors)
    return np.sqrt(np.mean((new.forces - old.forces) ** 2, axis=(1, 2)))


def chi2_per_label(committee: Committee, labels) -> float:
    predicted = committee.evaluate([label.atoms for label in labels]).energy_mean
    return float(np.mean(((predicted - [label.energy for label in labels]) / SIGMA) ** 2))


@pytest.fixture(scope="module")
def constrained(case):
    return refit_committee(case["committee"], case["labels"][:16], case["anchors"], RefitSettings())


def test_refit_reproduces_high_fidelity_energies_within_the_force_tolerance(case, constrained):
    result, labels = constrained, case["labels"][:16]
    assert chi2_per_label(result.committee, labels) <= 2.0
    assert result.metrics["chi2_per_label"] == pytest.approx(chi2_per_label(result.committee, labels), rel=1e-6)
    measured = rms_force_change(case["committee"], result.committee, case["anchors"])
    assert np.all(measured <= 0.05 + 1e-9)
    assert measured == pytest.approx(result.metrics["force_rms"], rel=1e-6)
    assert result.metrics["offset_mode"] == "shared"
    # Readout features summed over atoms have a nearly constant part, so the offset
    # itself is found only to within a few % of the 40 eV it absorbs; the energies
    # of unseen structures are what must come out right.
    for fit in result.members:
        assert fit.element_offsets == pytest.approx([OFFSET_PER_ATOM] * 2, rel=0.05)
    unseen = case["labels"][16:]
    predicted = result.committee.evaluate([label.atoms for label in unseen]).energy_mean
    assert np.mean(np.abs(predicted - [label.energy for label in unseen])) < 5 * SIGMA


def test_only_readout_output_weights_and_offsets_change_bit_for_bit(case, constrained):
    trainable = set(output_parameters(case["committee"].models[0])) | {ATOMIC_ENERGIES_KEY}
    for before, after in zip(case["committee"].state_dicts(), constrained.committee.state_dicts()):
        assert set(before) == set(after)
        unchanged = [name for name in before if name not in trainable]
        assert all(torch.equal(before[name], after[name]) for name in unchanged)
        assert all(not torch.equal(before[name], after[name]) for name in trainable)
        assert all(name.startswith("readouts.") for name in trainable - {ATOMIC_ENERGIES_KEY})
    for record, fit, old in zip(constrained.committee.architectures, constrained.members, case["committee"].architectures):
        assert record["atomic_energies"] == pytest.approx(np.add(old["atomic_energies"], fit.element_offsets).tolist())


def test_parent_committee_is_not_modified(case, constrained):
    for a, b in zip(case["weights"], case["committee"].state_dicts()):
        assert all(torch.equal(a[name], b[name]) for name in a)
    # Committee members keep requires_grad off; the refit must not switch it on in the parent.
    assert not any(p.requires_grad for model in case["committee"].models for p in model.parameters())


def test_unconstrained_fit_wins_on_energies_and_loses_on_forces(case):
    labels = case["labels"][:16]
    plain = {"bootstrap": False, "perturb_energies": False, "calibrate": False}
    tight = refit_committee(
        case["committee"], labels, case["anchors"], RefitSettings(force_rms_tolerance=0.01, **plain)
    )
    free = refit_committee(case["committee"], labels, case["anchors"], RefitSettings(force_weight=0.0, **plain))
    assert all(weight > 0 for weight in tight.metrics["force_weight"])
    assert max(tight.metrics["force_rms"]) <= 0.01 + 1e-12
    # Each member uses the whole force budget, unless it already fits the labels to their error bars.
    for rms, chi2 in zip(tight.metrics["force_rms"], tight.metrics["member_chi2_per_label"]):
        assert rms >= 0.01 * (1 - 2e-3) or chi2 <= 1.0 + 1e-6
    for free_chi2, tight_chi2 in zip(free.metrics["member_chi2_per_label"], tight.metrics["member_chi2_per_label"]):
        assert free_chi2 < tight_chi2
    assert np.all(rms_force_change(case["committee"], free.committee, case["anchors"]) > 0.01)


def test_a_loose_bound_fits_the_labels_to_their_error_bars_not_their_noise(case):
    labels = case["labels"][:6]
    plain = {"bootstrap": False, "perturb_energies": False, "calibrate": False}
    loose = refit_committee(case["committee"], labels, case["anchors"], RefitSettings(force_rms_tolerance=10.0, **plain))
    free = refit_committee(case["committee"], labels, case["anchors"], RefitSettings(force_weight=0.0, **plain))
    dof = len(labels) - 1  # one shared offset
    for loose_chi2, free_chi2 in zip(loose.metrics["member_chi2_per_label"], free.metrics["member_chi2_per_label"]):
        assert free_chi2 * len(labels) < 0.5 * dof  # the free fit follows the noise
        assert loose_chi2 * len(labels) == pytest.approx(dof, rel=0.01)
    assert all(a < b for a, b in zip(loose.metrics["force_rms"], free.metrics["force_rms"]))


def test_committee_spread_shrinks_as_labels_are_added(case):
    held_out = [label.atoms for label in case["labels"][20:]]
    spreads = [case["committee"].evaluate(held_out).energy_spread.mean()]
    for count in (3, 20):
        result = refit_committee(
            case["committee"], case["labels"][:count], case["anchors"], RefitSettings(calibrate=False)
        )
        spreads.append(result.committee.evaluate(held_out).energy_spread.mean())
    assert spreads[2] < spreads[1] < spreads[0]


def test_refit_on_zero_labels_equals_its_parent(case):
    result = refit_committee(case["committee"], [], case["anchors"])
    for before, after in zip(case["committee"].state_dicts(), result.committee.state_dicts()):
        assert all(torch.equal(before[name], after[name]) for name in before)
    assert result.committee.architectures == case["committee"].architectures
    assert result.metrics["n_labels"] == 0


def test_refit_is_deterministic_for_a_seed(case):
    labels, settings = case["labels"][:6], RefitSettings(force_weight=10.0, calibrate=False, seed=3)
    first = refit_committee(case["committee"], labels, case["anchors"], settings)
    second = refit_committee(case["committee"], labels, case["anchors"], settings)
    other = refit_committee(case["committee"], labels, case["anchors"], settings.model_copy(update={"seed": 4}))
    for a, b in zip(first.committee.state_dicts(), second.committee.state_dicts()):
        assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(
        torch.equal(a[name], b[name])
        for a, b in zip(first.committee.state_dicts(), other.committee.state_dicts())
        for name in a
    )


def test_calibration_reports_coverage_of_held_out_labels(constrained):
    calibration = constrained.metrics["calibration"]
    assert calibration["method"] == "leave-one-out" and calibration["n_labels"] == 16
    assert 0.0 <= calibration["within_1_sigma"] <= calibration["within_2_sigma"] <= 1.0
    assert calibration["within_2_sigma"] >= 0.5


def test_several_compositions_get_per_element_offsets(case):
    rng = np.random.default_rng(11)
    structures = [cluster(rng, symbols) for symbols in ("H2O2", "H2O", "HO2", "H3O") for _ in range(3)]
    true_offsets = {1: 2.0, 8: 7.0}
    base = case["committee"].evaluate(structures).energies[0]
    labels = [
        EnergyLabel(atoms, float(e + sum(true_offsets[z] for z in atoms.numbers)), SIGMA)
        for atoms, e in zip(structures, base)
    ]
    result = refit_committee(case["committee"], labels, case["anchors"], RefitSettings(calibrate=False))
    assert result.metrics["offset_mode"] == "per_element"
    # Per-element constants can sit in the offsets or in the readouts' element channels;
    # what the labels fix is each structure's shift, sum over its atoms of the true offsets.
    shifts = result.committee.evaluate(structures).energies[0] - base
    expected = [sum(true_offsets[z] for z in atoms.numbers) for atoms in structures]
    assert shifts == pytest.approx(expected, abs=0.1)
    assert result.metrics["member_chi2_per_label"][0] <= 2.0


def test_settings_take_lambda_or_delta_but_not_both():
    assert RefitSettings().force_rms_tolerance == 0.05 and RefitSettings().constrained
    weighted = RefitSettings(force_weight=3.0)
    assert weighted.force_rms_tolerance is None and not weighted.constrained
    with pytest.raises(ValidationError, match="not both"):
        RefitSettings(force_weight=3.0, force_rms_tolerance=0.1)
    with pytest.raises(ValidationError, match="one of force_weight"):
        RefitSettings(force_rms_tolerance=None)
    with pytest.raises(ValidationError):
        RefitSettings(sigma_floor=0.0)
    with pytest.raises(ValidationError):
        RefitSettings(learning_rate=0.1)


@pytest.mark.parametrize(
    "energy, error, message",
    [
        (-100.0, float("nan"), "error bar must be a finite number"),
        (-100.0, -0.01, "error bar must be >= 0"),
        (float("inf"), 0.01, "energy must be a finite number"),
    ],
)
def test_bad_label_values_are_rejected(case, energy, error, message):
    labels = [EnergyLabel(case["labels"][0].atoms, energy, error, label_id="bad")]
    with pytest.raises(RefitInputError, match=message):
        refit_committee(case["committee"], labels, case["anchors"])


def test_labels_and_anchors_with_unknown_elements_are_rejected(case):
    nitrogen = EnergyLabel(Atoms("NH3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), -50.0, 0.01, "n1")
    with pytest.raises(RefitInputError, match=r"label n1 \(H3N\) holds elements \['N'\]"):
        refit_committee(case["committee"], [nitrogen], case["anchors"])
    with pytest.raises(UnknownElementError, match="N"):
        refit_committee(case["committee"], case["labels"][:2], [nitrogen.atoms])


def test_labels_without_anchors_are_rejected(case):
    with pytest.raises(RefitInputError, match="needs anchor structures"):
        refit_committee(case["committee"], case["labels"][:2], [])
