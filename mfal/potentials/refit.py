"""Readout-only refit of a MACE committee on high-fidelity (QMC) energies under a force constraint.

Only the output layers of MACE's readouts (``readouts.0.linear``,
``readouts.1.linear_2`` ...) and an energy offset added to the per-element
reference energies change; every other parameter and buffer is copied bit for
bit. Each member minimises

    sum(((E_pred - E_label) / sigma)^2) + lambda * mean_atoms |F_pred - F_ref|^2

where F_ref are the forces of the member's own DFT-trained base model on the
anchors (DFT training structures plus the current NEB images), never those of a
previous refit, so errors cannot drift from cycle to cycle. lambda is fixed or
searched for (hard form: the weakest penalty keeping RMS(F_pred - F_ref) <= delta,
raised while the labels stay fitted to their error bars).

The energy and forces are exactly linear in the output-layer weights (see
:mod:`mfal.potentials.refit_linear`), so after one backward pass per weight the
fit is a small exact least-squares problem: the tolerance search, the bootstrap
committee and the leave-one-out calibration cost almost nothing on top.

The hidden layer of a non-linear readout (``readouts.1.linear_1``) keeps its
base weights: letting it move would make the forces non-linear in the
parameters, and every optimiser step would then need a second-order backward
pass over all anchors (tens of seconds for 100 MoS2 cells on 2 cores) instead
of one backward pass per output weight, once.

Committee: member m refits on all labels (or, with ``bootstrap``, on its own
resample of them) with energies perturbed by N(0, sigma), starting from its own
base weights, so the spread reflects what the labels leave undetermined. All randomness comes from
``settings.seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import ase
import ase.data
import numpy as np

from mfal.potentials.committee import Committee
from mfal.potentials.errors import PotentialError
from mfal.potentials.graphs import check_elements
from mfal.potentials.refit_calibration import calibration_summary, leave_one_out_predictions
from mfal.potentials.refit_linear import (
    EnergyResponse,
    energy_response,
    flat_parameters,
    output_parameters,
    refitted_model,
)
from mfal.potentials.refit_offsets import choose_offset_mode, composition_matrix, offset_basis
from mfal.potentials.refit_responses import AnchorResponses, ResponseCache
from mfal.potentials.refit_settings import RefitSettings
from mfal.potentials.refit_solve import MemberProblem, MemberSolution, force_root, solve_member


class RefitInputError(PotentialError):
    """Labels or anchors a refit cannot use (bad error bars, unknown elements, missing anchors)."""


@dataclass(frozen=True)
class EnergyLabel:
    """A high-fidelity total energy of one structure: mean and error bar in eV."""

    atoms: ase.Atoms
    energy: float
    error: float
    label_id: str | None = None

    @property
    def name(self) -> str:
        return f"label {self.label_id}" if self.label_id is not None else f"label of {self.atoms.get_chemical_formula()}"


@dataclass(frozen=True)
class MemberFit:
    """What the refit did to one member."""

    force_weight: float
    """lambda used, in (eV/Å)^-2."""
    force_rms: float
    """RMS over anchor force components of F_pred - F_ref, eV/Å."""
    force_max: float
    """Largest per-atom |F_pred - F_ref| on the anchors, eV/Å."""
    chi2_per_label: float
    """Of this member on the original (not resampled) labels."""
    element_offsets: np.ndarray
    """eV added to each element's reference energy, in the model's element order."""
    label_indices: np.ndarray
    """Indices of the labels this member was fitted on (its bootstrap resample)."""
    wall_time_s: float
    cpu_time_s: float
    """CPU seconds of this process (all threads) spent on this member: a load-independent cost."""


@dataclass(frozen=True)
class RefitResult:
    """The refitted committee, per-member details and JSON-able metrics for the store."""

    committee: Committee
    members: list[MemberFit]
    metrics: dict = field(default_factory=dict)


def check_label_elements(labels: Sequence[EnergyLabel], atomic_numbers: Sequence[int]) -> None:
    """Raise :class:`RefitInputError` naming the first label with an element outside ``atomic_numbers``."""
    known = set(int(z) for z in atomic_numbers)
    for label in labels:
        if not isinstance(label.atoms, ase.Atoms):
            raise RefitInputError(f"{label.name}: atoms must be an ase.Atoms, got {type(label.atoms).__name__}")
        unknown = sorted(set(int(z) for z in label.atoms.numbers) - known)
        if unknown:
            raise RefitInputError(
                f"{label.name} ({label.atoms.get_chemical_formula()}) holds elements "
                f"{[ase.data.chemical_symbols[z] for z in unknown]} the committee does not know; it knows "
                f"{[ase.data.chemical_symbols[z] for z in sorted(known)]}"
            )


def validate_refit_input(committee: Committee, labels: Sequence[EnergyLabel], anchors: Sequence[ase.Atoms]) -> None:
    """Raise :class:`RefitInputError` (or the engine's element error) before any model work."""
    check_label_elements(labels, committee.atomic_numbers)
    for label in labels:
        for what, value in (("energy", label.energy), ("error bar", label.error)):
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(float(value)):
                raise RefitInputError(f"{label.name}: {what} must be a finite number of eV, got {value!r}")
        if label.error < 0:
            raise RefitInputError(f"{label.name}: error bar must be >= 0 eV, got {label.error}")
    if labels and not anchors:
        raise RefitInputError(
            "a refit needs anchor structures (DFT training structures and NEB images) for the force penalty"
        )
    check_elements(anchors, committee.atomic_numbers)
    for model in committee.models:
        output_parameters(model)


def refit_committee(
    committee: Committee,
    labels: Sequence[EnergyLabel],
    anchors: Sequence[ase.Atoms],
    settings: RefitSettings | None = None,
    *,
    response_cache: ResponseCache | None = None,
) -> RefitResult:
    """Refit every member of a DFT-trained ``committee`` on ``labels``; the input is not modified.

    With no labels the result equals the parent, weight for weight. The
    anchors' force responses are taken from ``response_cache`` where it holds them
    and put there otherwise (see :mod:`mfal.potentials.refit_responses`).
    """
    settings = settings or RefitSettings()
    labels, anchors = list(labels), list(anchors)
    validate_refit_input(committee, labels, anchors)
    started = time.perf_counter()
    if not labels:
        return _unchanged(committee, anchors, settings, started)

    structures = [label.atoms for label in labels]
    energies = np.array([float(label.energy) for label in labels])
    sigma = np.maximum(np.array([float(label.error) for label in labels]), settings.sigma_floor)
    counts = composition_matrix(structures, committee.atomic_numbers)
    mode = choose_offset_mode(counts, settings.offset_mode)
    basis = offset_basis(counts, mode, settings.rcond)
    offset_features = counts @ basis

    label_batch = committee.batch(structures)
    anchor_responses = AnchorResponses(committee, anchors, settings.anchor_batch_size, response_cache)
    every_label = np.arange(len(labels))
    responses, solutions, fits, models = [], [], [], []
    for member, model in enumerate(committee.models):
        member_started, member_cpu = time.perf_counter(), time.process_time()
        energy = energy_response(model, label_batch)
        forces = anchor_responses.for_member(member)
        root = force_root(forces.design)
        indices, solution = _fit_member(settings, member, 0, every_label, energy, root, offset_features, energies, sigma)
        element_offsets = basis @ solution.phi
        models.append(
            refitted_model(model, flat_parameters(output_parameters(model)) + solution.delta_theta, element_offsets)
        )
        predicted = _predict(energy, offset_features, solution)
        change = (forces.design @ solution.delta_theta).reshape(-1, 3)
        responses.append((energy, root))
        solutions.append(solution)
        fits.append(
            MemberFit(
                force_weight=solution.force_weight,
                force_rms=solution.force_rms,
                force_max=float(np.linalg.norm(change, axis=1).max()),
                chi2_per_label=float(np.mean(((predicted - energies) / sigma) ** 2)),
                element_offsets=element_offsets,
                label_indices=indices,
                wall_time_s=time.perf_counter() - member_started,
                cpu_time_s=time.process_time() - member_cpu,
            )
        )

    calibration = None
    if settings.calibrate and len(labels) >= 2:

        def predict_held_out(held_out: int) -> np.ndarray:
            pool = np.delete(every_label, held_out)
            predictions = []
            for member, (energy, root) in enumerate(responses):
                _, solution = _fit_member(
                    settings, member, held_out + 1, pool, energy, root, offset_features, energies, sigma
                )
                predictions.append(_predict(energy, offset_features, solution)[held_out])
            return np.array(predictions)

        calibration = calibration_summary(energies, sigma, leave_one_out_predictions(len(labels), predict_held_out))

    member_energies = np.array(
        [_predict(energy, offset_features, solution) for (energy, _), solution in zip(responses, solutions)]
    )
    new_committee = _committee_like(committee, models, [fit.element_offsets for fit in fits])
    metrics = _metrics(
        committee,
        fits,
        anchors,
        settings,
        mode=mode,
        n_labels=len(labels),
        chi2_per_label=float(np.mean(((member_energies.mean(axis=0) - energies) / sigma) ** 2)),
        calibration=calibration,
        wall_time_s=time.perf_counter() - started,
    )
    metrics["anchor_responses"] = {"computed": anchor_responses.computed, "reused": anchor_responses.reused}
    return RefitResult(committee=new_committee, members=fits, metrics=metrics)


def _fit_member(settings, member, fold, pool, energy, root, offset_features, energies, sigma):
    """One member's resample of the labels in ``pool`` and its fit; fold 0 is the refit itself.

    The resample and the perturbations are drawn from (seed, member, fold) alone,
    so every member and every leave-one-out fold is reproducible on its own.
    """
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, member, fold]))
    indices = rng.choice(pool, size=len(pool), replace=True) if settings.bootstrap else np.array(pool)
    targets = energies[indices].copy()
    if settings.perturb_energies:
        targets += rng.normal(0.0, sigma[indices])
    problem = MemberProblem.build(
        energy.design[indices], offset_features[indices], targets - energy.energies[indices], sigma[indices], root
    )
    return indices, solve_member(problem, settings)


def _predict(energy: EnergyResponse, offset_features: np.ndarray, solution: MemberSolution) -> np.ndarray:
    return energy.energies + energy.design @ solution.delta_theta + offset_features @ solution.phi


def _committee_like(committee: Committee, models, element_offsets) -> Committee:
    records = []
    for record, offsets in zip(committee.architectures, element_offsets):
        record = dict(record)
        record["atomic_energies"] = (np.asarray(record["atomic_energies"], dtype=float) + offsets).tolist()
        records.append(record)
    return Committee(
        models,
        records,
        dtype=committee.dtype,
        device=committee.device,
        head=committee.head,
        min_members=len(models),
    )


def _unchanged(committee: Committee, anchors, settings: RefitSettings, started: float) -> RefitResult:
    """Zero labels: nothing is determined, so every member keeps its parent's weights."""
    n_elements = len(committee.atomic_numbers)
    models = [
        refitted_model(model, flat_parameters(output_parameters(model)), np.zeros(n_elements))
        for model in committee.models
    ]
    fits = [
        MemberFit(
            force_weight=0.0,
            force_rms=0.0,
            force_max=0.0,
            chi2_per_label=float("nan"),
            element_offsets=np.zeros(n_elements),
            label_indices=np.zeros(0, dtype=int),
            wall_time_s=0.0,
            cpu_time_s=0.0,
        )
        for _ in models
    ]
    metrics = _metrics(
        committee,
        fits,
        anchors,
        settings,
        mode="none",
        n_labels=0,
        chi2_per_label=None,
        calibration=None,
        wall_time_s=time.perf_counter() - started,
    )
    new_committee = _committee_like(committee, models, [fit.element_offsets for fit in fits])
    return RefitResult(committee=new_committee, members=fits, metrics=metrics)


def _metrics(committee, fits, anchors, settings, *, mode, n_labels, chi2_per_label, calibration, wall_time_s) -> dict:
    """JSON-able summary for the model record."""
    symbols = [ase.data.chemical_symbols[z] for z in committee.atomic_numbers]
    finite = lambda value: None if value is None or not math.isfinite(value) else float(value)  # noqa: E731
    return {
        "n_labels": int(n_labels),
        "n_anchors": len(anchors),
        "n_anchor_atoms": int(sum(len(atoms) for atoms in anchors)),
        "offset_mode": mode,
        "chi2_per_label": finite(chi2_per_label),
        "member_chi2_per_label": [finite(fit.chi2_per_label) for fit in fits],
        "force_rms": [fit.force_rms for fit in fits],
        "force_max": [fit.force_max for fit in fits],
        "force_rms_max": max(fit.force_rms for fit in fits),
        "force_weight": [fit.force_weight for fit in fits],
        "force_rms_tolerance": settings.force_rms_tolerance,
        "element_offsets": [dict(zip(symbols, map(float, fit.element_offsets))) for fit in fits],
        "calibration": calibration,
        "wall_time_s": float(wall_time_s),
        "member_wall_time_s": [fit.wall_time_s for fit in fits],
        "member_cpu_time_s": [fit.cpu_time_s for fit in fits],
    }
