"""Base training of a MACE committee on low-fidelity (DFT) energies and forces.

Members differ in their initial weights (one seed each) and in their training
set (a bootstrap resample of the training split), which is what makes their
spread track the error. All members share one held-out validation split (for
early stopping) and one held-out test split (for the reported metrics), and
one set of data-derived constants (E0s, average neighbour count, scale and
shift), so they share one architecture and can be evaluated as one batch.

Labels are read with an explicit mace ``KeySpecification``: mace's default
empty one reads no labels and silently trains on zero energies.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import mace.data  # imported before e3nn, which needs mace's torch.load setup
import numpy as np
import torch
from ase import Atoms
from mace.tools import torch_geometric
from mace.tools.utils import AtomicNumberTable
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mfal.hashing import weights_hash
from mfal.potentials.architecture import build_model, default_architecture
from mfal.potentials.committee import Committee, DEFAULT_MIN_MEMBERS, resolve_device, resolve_dtype
from mfal.potentials.errors import PotentialError, TrainingDataError
from mfal.potentials.graphs import check_elements, labelled_keys, run_model

EPOCH_COLUMNS = (TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                 TextColumn("valid loss {task.fields[loss]:.3e}"), TimeElapsedColumn())
MEMBER_COLUMNS = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trained"),
                  TimeElapsedColumn())

ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"


@dataclass(frozen=True)
class TrainingSettings:
    """Options of :func:`train_committee`; every field is JSON-able and goes into the metrics."""

    energy_key: str = ENERGY_KEY
    forces_key: str = FORCES_KEY
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    max_epochs: int = 300
    patience: int = 30
    batch_size: int = 8
    learning_rate: float = 5e-3
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    clip_grad: float = 10.0
    ema_decay: float = 0.99
    bootstrap: bool = True
    seed: int = 0
    dtype: str = "float64"
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 0.5:
                raise PotentialError(f"{name} must lie in (0, 0.5), got {value}")
        for name in ("max_epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise PotentialError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise PotentialError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.clip_grad > 0:
            raise PotentialError(f"clip_grad must be positive, got {self.clip_grad}")
        if not 0 <= self.ema_decay < 1:
            raise PotentialError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.energy_weight < 0 or self.forces_weight < 0 or self.energy_weight + self.forces_weight == 0:
            raise PotentialError(
                f"loss weights must be >= 0 and not both 0, got energy {self.energy_weight}, forces {self.forces_weight}"
            )
        resolve_dtype(self.dtype)


def attach_labels(structures: Sequence[Atoms], energy_key: str = ENERGY_KEY, forces_key: str = FORCES_KEY) -> list[Atoms]:
    """Copies of ``structures`` with energy in ``info[energy_key]`` and forces in ``arrays[forces_key]``.

    Labels already under those keys are kept; otherwise they are taken from an
    attached calculator's results (how ``ase.io.read`` returns an extxyz whose
    columns are called ``energy``/``forces``). Raises
    :class:`TrainingDataError` naming the first structure without them.
    """
    labelled = []
    for index, atoms in enumerate(structures):
        copy = atoms.copy()
        results = atoms.calc.results if atoms.calc is not None else {}
        if energy_key not in copy.info:
            if "energy" not in results:
                raise TrainingDataError(
                    f"structure {index} ({atoms.get_chemical_formula()}) has no energy: neither "
                    f"info[{energy_key!r}] nor a calculator result; info holds {sorted(atoms.info)}"
                )
            copy.info[energy_key] = float(results["energy"])
        if forces_key not in copy.arrays:
            if "forces" not in results:
                raise TrainingDataError(
                    f"structure {index} ({atoms.get_chemical_formula()}) has no forces: neither "
                    f"arrays[{forces_key!r}] nor a calculator result; arrays hold {sorted(atoms.arrays)}"
                )
            copy.new_array(forces_key, np.asarray(results["forces"], dtype=float))
        energy = copy.info[energy_key]
        if not isinstance(energy, (int, float, np.floating)) or not math.isfinite(energy):
            raise TrainingDataError(f"structure {index}: energy {energy!r} is not a finite number")
        if copy.arrays[forces_key].shape != (len(copy), 3) or not np.isfinite(copy.arrays[forces_key]).all():
            raise TrainingDataError(f"structure {index}: forces must be a finite ({len(copy)}, 3) array")
        labelled.append(copy)
    return labelled


def split_indices(
    n_structures: int, valid_fraction: float, test_fraction: float, seed: int,
    kept: dict[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Random train/valid/test split; valid and test get at least one structure each.

    With ``kept`` (``{"test": indices, "valid": indices}``, e.g. from
    :func:`mfal.systems.dataset.kept_split`) those are the test and validation
    splits and every other structure trains: the split of a dataset that grew
    since, so that successive committees are measured on the same structures
    and a warm start never meets its predecessor's training data there.
    """
    if n_structures < 3:
        raise TrainingDataError(f"training needs at least 3 structures (train, validation, test), got {n_structures}")
    if kept is not None:
        test, valid = (np.unique(np.asarray(kept[part], dtype=int)) for part in ("test", "valid"))
        for part, indices in (("test", test), ("valid", valid)):
            if len(indices) == 0 or indices.min() < 0 or indices.max() >= n_structures:
                raise TrainingDataError(
                    f"the kept {part} split must be indices of the {n_structures} structures, got {indices.tolist()}")
        shared = np.intersect1d(test, valid)
        if shared.size:
            raise TrainingDataError(f"structures {shared.tolist()} are in both kept splits")
        train = np.setdiff1d(np.arange(n_structures), np.concatenate([test, valid]))
        if len(train) == 0:
            raise TrainingDataError("the kept test and validation splits leave no structure to train on")
        return {"test": test, "valid": valid, "train": train}
    order = np.random.default_rng(seed).permutation(n_structures)
    n_valid = max(1, round(valid_fraction * n_structures))
    n_test = max(1, round(test_fraction * n_structures))
    return {
        "test": np.sort(order[:n_test]),
        "valid": np.sort(order[n_test : n_test + n_valid]),
        "train": np.sort(order[n_test + n_valid :]),
    }


def fit_constants(structures: Sequence[Atoms], atomic_numbers: Sequence[int], r_max: float, energy_key: str, forces_key: str) -> dict[str, Any]:
    """Data-derived constants of the architecture, from the training structures.

    E0s by least squares of total energy on element counts; the average
    number of neighbours within ``r_max``; the shift as the mean per-atom
    energy left after E0s and the scale as the RMS force component (mace's
    ``rms_forces_scaling``).
    """
    counts = np.array([[np.count_nonzero(atoms.numbers == z) for z in atomic_numbers] for atoms in structures], dtype=float)
    energies = np.array([atoms.info[energy_key] for atoms in structures], dtype=float)
    e0s = np.linalg.lstsq(counts, energies, rcond=None)[0]
    residual = (energies - counts @ e0s) / counts.sum(axis=1)
    forces = np.concatenate([atoms.arrays[forces_key].ravel() for atoms in structures])
    neighbours = []
    for atoms in structures:
        edges = mace.data.get_neighborhood(
            positions=atoms.positions, cutoff=float(r_max), pbc=tuple(bool(p) for p in atoms.pbc), cell=np.array(atoms.cell)
        )[0]
        neighbours.append(np.bincount(edges[1], minlength=len(atoms)))
    scale = float(np.sqrt(np.mean(forces**2)))
    return {
        "atomic_energies": e0s.tolist(),
        "avg_num_neighbors": float(np.mean(np.concatenate(neighbours))),
        "atomic_inter_shift": float(residual.mean()),
        "atomic_inter_scale": scale if scale > 1e-8 else 1.0,
    }


def labelled_graphs(
    structures: Sequence[Atoms],
    record: dict[str, Any],
    dtype: torch.dtype = torch.float64,
    energy_key: str = ENERGY_KEY,
    forces_key: str = FORCES_KEY,
) -> list:
    """One mace ``AtomicData`` graph per structure, carrying its energy and forces labels.

    Built once and re-batched every epoch (``torch_geometric.Batch.from_data_list``).
    A structure without forces under ``forces_key`` gets zero force weight
    (mace sets ``forces_weight`` 0), so energy-only labels are fine.
    """
    z_table = AtomicNumberTable(list(record["atomic_numbers"]))
    keys = labelled_keys(energy_key, forces_key)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return [
            mace.data.AtomicData.from_config(
                mace.data.config_from_atoms(atoms, key_specification=keys),
                z_table=z_table,
                cutoff=float(record["r_max"]),
                heads=list(record["heads"]),
            )
            for atoms in structures
        ]
    finally:
        torch.set_default_dtype(previous)


def _loss(model, batch, settings: TrainingSettings, training: bool) -> torch.Tensor:
    """Weighted mean squared error of per-atom energy (eV/atom) and force components (eV/Å).

    Per-structure label weights from the graphs (0 where a label is missing) multiply each term.
    """
    output = run_model(model, batch, training=training)
    atoms_per_graph = (batch["ptr"][1:] - batch["ptr"][:-1]).to(output["energy"].dtype)
    energy_error = (output["energy"] - batch["energy"]) / atoms_per_graph
    forces_error = (output["forces"] - batch["forces"]) ** 2
    forces_weight = batch["forces_weight"][batch["batch"]].unsqueeze(-1)
    return settings.energy_weight * torch.mean(batch["energy_weight"] * energy_error**2) + settings.forces_weight * torch.mean(
        forces_weight * forces_error
    )


def _batches(graphs: list, batch_size: int, rng: np.random.Generator | None, device: torch.device):
    order = rng.permutation(len(graphs)) if rng is not None else np.arange(len(graphs))
    for start in range(0, len(graphs), batch_size):
        chunk = [graphs[i] for i in order[start : start + batch_size]]
        yield torch_geometric.Batch.from_data_list(chunk).to(device)


def recentre_shift(model: torch.nn.Module, graphs: list, device: torch.device) -> float:
    """Move the per-atom energy shift so the mean per-atom energy error on ``graphs`` is zero; returns the new shift.

    The readouts have no bias, so a constant energy offset is otherwise learnt
    only slowly through the features; fixing it in closed form at the start and
    the end of training removes it exactly (it is the least-squares optimum of
    the per-atom energy loss over a constant).
    """
    residuals = []
    for batch in _batches(graphs, 64, None, device):
        output = run_model(model, batch)
        atoms_per_graph = (batch["ptr"][1:] - batch["ptr"][:-1]).to(output["energy"].dtype)
        weights = batch["energy_weight"] > 0
        residuals.append(((batch["energy"] - output["energy"]) / atoms_per_graph)[weights])
    delta = torch.cat(residuals).mean()
    with torch.no_grad():
        model.scale_shift.shift += delta.to(model.scale_shift.shift.dtype)
    return float(model.scale_shift.shift.mean())


PROGRESS_EVERY_S = 120.0
"""Seconds of training between two saves of a member's progress file (see :class:`MemberProgress`)."""


@dataclass
class MemberProgress:
    """Where an unfinished member keeps its training state, and what it must have been trained from.

    A MoS2 member trains for 40 minutes or more; a batch node's wall limit or the
    end of a session would otherwise lose all of it. The file holds everything
    the next epoch depends on (weights, Adam's and the scheduler's state, the
    weight average, the batch order's random state, the best weights so far), so
    a resumed member ends with the same weights as one trained without a break.
    ``identity`` (JSON) ties the file to the member's architecture, settings,
    seed and data; a file of another identity is ignored and overwritten.
    """

    path: Path
    identity: str

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none for this identity."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        return state if state.get("identity") == self.identity else None

    def save(self, state: dict[str, Any]) -> None:
        """Write the state (atomic replace), making its folder on a fresh machine."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".part")
        torch.save({**state, "identity": self.identity}, partial)
        partial.replace(self.path)


def train_member(
    record: dict[str, Any],
    train_graphs: list,
    valid_graphs: list,
    settings: TrainingSettings,
    seed: int,
    progress: Progress | None = None,
    label: str = "member",
    saved_progress: MemberProgress | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one member from a fresh initialisation (``seed``) or from ``initial_state``, early-stopped on ``valid_graphs``.

    As in mace's own trainer, gradients are clipped (``clip_grad``, in norm)
    so that one batch of strongly compressed geometries cannot throw the
    weights far away, and validation and the returned weights use an
    exponential moving average of the weights (``ema_decay``), which removes
    most of Adam's step-to-step noise from the final model.

    Returns the model holding its best-validation weights and a summary of
    its run (epochs, best epoch, best validation loss, wall seconds). The member's energy
    shift is re-fitted (:func:`recentre_shift`), so read it back into its
    architecture record (``atomic_inter_shift``) before saving.

    With ``saved_progress``, the training state is saved there every
    :data:`PROGRESS_EVERY_S` seconds, and a member interrupted before it
    finished resumes from its last save.
    """
    start = time.perf_counter()
    dtype, device = resolve_dtype(settings.dtype), resolve_device(settings.device)
    torch.manual_seed(seed)
    model = build_model(record, dtype=dtype)
    if initial_state is not None:
        model.load_state_dict(initial_state, strict=True)
    model = model.to(device)
    recentre_shift(model, train_graphs, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(1, settings.patience // 3))
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True
    )
    rng = np.random.default_rng(seed)
    best_loss, best_epoch, best_state = math.inf, -1, None
    first_epoch, earlier_seconds = 0, 0.0
    resumed = saved_progress.load() if saved_progress is not None else None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        averaged.load_state_dict(resumed["averaged"])
        rng.bit_generator.state = json.loads(resumed["rng"])
        best_loss, best_epoch, best_state = resumed["best_loss"], resumed["best_epoch"], resumed["best_state"]
        first_epoch, earlier_seconds = resumed["next_epoch"], resumed["seconds"]
    task = progress.add_task(label, total=settings.max_epochs, completed=first_epoch, loss=best_loss) \
        if progress is not None else None
    last_save = time.perf_counter()
    epoch = first_epoch - 1  # the last epoch run, should none be left to run
    for epoch in range(first_epoch, settings.max_epochs):
        model.train()
        for batch in _batches(train_graphs, settings.batch_size, rng, device):
            optimizer.zero_grad()
            loss = _loss(model, batch, settings, training=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            optimizer.step()
            averaged.update_parameters(model)
        evaluated = averaged.module
        evaluated.eval()
        valid_loss = 0.0
        for batch in _batches(valid_graphs, settings.batch_size, None, device):
            valid_loss += float(_loss(evaluated, batch, settings, training=False)) * int(batch.num_graphs)
        valid_loss /= len(valid_graphs)
        scheduler.step(valid_loss)
        if valid_loss < best_loss:
            best_loss, best_epoch = valid_loss, epoch
            best_state = {name: tensor.detach().clone() for name, tensor in evaluated.state_dict().items()}
        if progress is not None:
            progress.update(task, advance=1, loss=valid_loss)
        if epoch - best_epoch >= settings.patience:
            break
        if saved_progress is not None and time.perf_counter() - last_save >= PROGRESS_EVERY_S:
            saved_progress.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "averaged": averaged.state_dict(), "rng": json.dumps(rng.bit_generator.state),
                "best_loss": best_loss, "best_epoch": best_epoch, "best_state": best_state, "next_epoch": epoch + 1,
                "seconds": earlier_seconds + time.perf_counter() - start,
            })
            last_save = time.perf_counter()
    if progress is not None:
        progress.update(task, total=epoch + 1, completed=epoch + 1)
    model.load_state_dict(best_state)
    recentre_shift(model, train_graphs, device)
    return model, {"seed": seed, "epochs": epoch + 1, "best_epoch": best_epoch + 1, "best_valid_loss": best_loss,
                   "seconds": round(earlier_seconds + time.perf_counter() - start, 1)}


FORCES_WEIGHT_KEY = "config_forces_weight"
"""``atoms.info`` key of a structure's force weight in the loss (mace's own name); 0 makes its label energy-only."""


def structure_forces_weight(atoms: Atoms) -> float:
    """The structure's force weight in the loss (1 unless ``info`` says otherwise)."""
    return float(atoms.info.get(FORCES_WEIGHT_KEY, 1.0))


def error_metrics(committee: Committee, structures: Sequence[Atoms], energy_key: str, forces_key: str) -> dict[str, Any]:
    """Energy RMSE (meV/atom) and force RMSE (meV/Å) of the committee mean and of each member.

    Forces count only where the structure's force weight is not zero: an
    energy-only label says how high a structure lies, not what its forces
    are, so its forces were never fitted (``n_energy_only`` counts them).
    """
    prediction = committee.evaluate(structures)
    natoms = np.array([len(atoms) for atoms in structures], dtype=float)
    reference_energy = np.array([atoms.info[energy_key] for atoms in structures], dtype=float)
    fitted = np.array([structure_forces_weight(atoms) != 0 for atoms in structures])
    fitted_atoms = np.repeat(fitted, natoms.astype(int))
    reference_forces = np.concatenate([atoms.arrays[forces_key] for atoms in structures])[fitted_atoms]

    def rmse_energy(energies: np.ndarray) -> float:
        return float(1000 * np.sqrt(np.mean(((energies - reference_energy) / natoms) ** 2)))

    def rmse_forces(forces: np.ndarray) -> float:
        return float(1000 * np.sqrt(np.mean((forces[fitted_atoms] - reference_forces) ** 2))) if fitted.any() else float("nan")

    return {
        "n_structures": len(structures),
        "n_energy_only": int(np.count_nonzero(~fitted)),
        "energy_rmse_mev_per_atom": rmse_energy(prediction.energy_mean),
        "force_rmse_mev_per_a": rmse_forces(prediction.forces_mean),
        "member_energy_rmse_mev_per_atom": [rmse_energy(e) for e in prediction.energies],
        "member_force_rmse_mev_per_a": [rmse_forces(f) for f in prediction.forces],
        "mean_energy_spread_mev_per_atom": float(1000 * np.mean(prediction.energy_spread / natoms)),
    }


def train_committee(
    structures: Sequence[Atoms],
    n_members: int = DEFAULT_MIN_MEMBERS,
    *,
    settings: TrainingSettings = TrainingSettings(),
    architecture_options: dict[str, Any] | None = None,
    progress: bool = False,
    min_members: int = DEFAULT_MIN_MEMBERS,
    checkpoint_dir: Path | None = None,
    jobs: int = 1,
    initial: Committee | None = None,
    kept_split: dict[str, Sequence[int]] | None = None,
) -> tuple[Committee, dict[str, Any]]:
    """Train ``n_members`` MACE models on labelled structures; return the committee and its metrics.

    ``architecture_options`` are keywords of
    :func:`~mfal.potentials.architecture.default_architecture` (r_max,
    channels, max_L, ...). Member ``i`` uses seed ``settings.seed + i`` for its
    initial weights and its bootstrap resample. The metrics (JSON-able) hold
    energy RMSE in meV/atom and force RMSE in meV/Å on the held-out test split,
    the same on the training split, the split sizes and each member's run.

    With ``checkpoint_dir``, each finished member is saved there
    (:func:`save_member`), and a member already saved for the same
    architecture, settings and data is loaded instead of trained again, so an
    interrupted training resumes with the next member; a member cut off while
    training resumes from its progress file there (:class:`MemberProgress`).

    With ``jobs`` > 1, that many members train at once, each in its own
    single-threaded process: a member's small batches leave most of a second
    thread idle, so on a multi-core machine parallel members finish sooner.

    With ``initial`` (a warm start), member ``i`` starts from the weights of the
    initial committee's member ``i`` (modulo its size) instead of fresh ones,
    and keeps its architecture and data constants: a committee whose NEB found
    a region its data lacked is trained on once more with that region's labels
    added, in a fraction of the epochs a fresh one needs. Each member's
    checkpoint identity then includes a hash of its starting weights.

    ``kept_split`` fixes the test and validation splits (see :func:`split_indices`).
    """
    if initial is not None and architecture_options:
        raise PotentialError("a warm start keeps the initial committee's architecture; give no architecture_options")
    if jobs < 1:
        raise PotentialError(f"jobs must be at least 1, got {jobs}")
    if n_members < min_members:
        raise PotentialError(f"a committee needs at least {min_members} members, got {n_members}")
    labelled = attach_labels(structures, settings.energy_key, settings.forces_key)
    splits = split_indices(len(labelled), settings.valid_fraction, settings.test_fraction, settings.seed, kept_split)
    train = [labelled[i] for i in splits["train"]]
    if initial is None:
        elements = sorted({int(z) for atoms in labelled for z in atoms.numbers})
        base = default_architecture(elements, [0.0] * len(elements), 1.0, **(architecture_options or {}))
        constants = fit_constants(train, base["atomic_numbers"], base["r_max"], settings.energy_key, settings.forces_key)
        record = {**base, **constants}
    else:
        record = dict(initial.architecture)
    starts = initial.state_dicts() if initial is not None else []
    member_starts = [starts[member % len(starts)] if starts else None for member in range(n_members)]
    check_elements(labelled, record["atomic_numbers"])
    dtype = resolve_dtype(settings.dtype)
    valid = [labelled[i] for i in splits["valid"]]

    data_hash = training_data_hash(train, settings.energy_key, settings.forces_key)
    finished: dict[int, tuple[torch.nn.Module, dict[str, Any]]] = {}
    pending: dict[int, tuple[dict[str, Any], Path | None, np.ndarray]] = {}
    progress_files: dict[int, MemberProgress | None] = {}
    for member in range(n_members):
        seed = settings.seed + member
        identity = {"record": record, "settings": asdict(settings), "seed": seed, "data": data_hash}
        if member_starts[member] is not None:
            identity["initial_weights"] = weights_hash(member_starts[member])
        saved = checkpoint_dir / f"member_{member:02d}.pt" if checkpoint_dir is not None else None
        restored = load_member(saved, identity, dtype) if saved is not None else None
        if restored is not None:
            finished[member] = restored
            continue
        rng = np.random.default_rng(seed)
        chosen = rng.integers(0, len(train), len(train)) if settings.bootstrap else np.arange(len(train))
        pending[member] = (identity, saved, chosen)
        progress_files[member] = None if saved is None else \
            MemberProgress(saved.with_suffix(".progress.pt"), json.dumps(identity, sort_keys=True))
    resamples = {member: chosen for member, (_, _, chosen) in pending.items()}
    initial_states = {member: member_starts[member] for member in pending}
    trained = _train_members(record, train, valid, resamples, progress_files, initial_states, settings, n_members,
                             progress, jobs)
    for member, model, run in trained:
        identity, saved, chosen = pending[member]
        run["distinct_training_structures"] = int(len(set(chosen.tolist())))
        if saved is not None:
            save_member(saved, identity, model, run)
            progress_files[member].path.unlink(missing_ok=True)
        finished[member] = (model, run)
    models = [finished[member][0] for member in range(n_members)]
    runs = [finished[member][1] for member in range(n_members)]
    records = [{**record, "atomic_inter_shift": float(model.scale_shift.shift)} for model in models]
    committee = Committee(models, records, dtype=dtype, device=settings.device, min_members=min_members)
    metrics = {
        "test": error_metrics(committee, [labelled[i] for i in splits["test"]], settings.energy_key, settings.forces_key),
        "train": error_metrics(committee, train, settings.energy_key, settings.forces_key),
        "splits": {name: len(indices) for name, indices in splits.items()},
        "members": runs,
        "settings": asdict(settings),
    }
    return committee, metrics


def _train_members(
    record: dict[str, Any],
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    resamples: dict[int, np.ndarray],
    progress_files: dict[int, MemberProgress | None],
    initial_states: dict[int, dict[str, torch.Tensor] | None],
    settings: TrainingSettings,
    n_members: int,
    progress: bool,
    jobs: int,
) -> Iterator[tuple[int, torch.nn.Module, dict[str, Any]]]:
    """Train each member in ``resamples`` (member -> indices into ``train``); yield (member, model, run) as each finishes.

    Each saves its progress to its ``progress_files`` entry (None: not saved)
    and starts from its ``initial_states`` entry (None: fresh weights).

    One at a time in this process, with a progress bar per member's epochs, or
    ``jobs`` at a time in single-threaded worker processes with a bar over
    members. Workers are spawned (forking a process that holds torch's thread
    pool can hang) and are sent structures and return numpy weights: tensors
    sent between processes travel as one shared file descriptor each, which
    runs out of descriptors for a few hundred graphs.
    """
    dtype = resolve_dtype(settings.dtype)
    if jobs == 1 or len(resamples) <= 1:
        train_graphs, valid_graphs = _graphs(record, train, valid, settings)
        with Progress(*EPOCH_COLUMNS, disable=not progress) as bar:
            for member, chosen in resamples.items():
                model, run = train_member(record, [train_graphs[i] for i in chosen], valid_graphs, settings,
                                          settings.seed + member, progress=bar, label=f"member {member + 1}/{n_members}",
                                          saved_progress=progress_files[member], initial_state=initial_states[member])
                yield member, model, run
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool, \
            Progress(*MEMBER_COLUMNS, disable=not progress) as bar:
        task = bar.add_task(f"{len(resamples)} members, {jobs} at a time", total=len(resamples))
        futures = {pool.submit(_trained_weights, record, [train[i] for i in chosen], valid, settings, settings.seed + member,
                               progress_files[member], _as_numpy(initial_states[member])): member
                   for member, chosen in resamples.items()}
        for future in as_completed(futures):
            weights, run = future.result()
            model = build_model(record, dtype=dtype)
            model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, strict=True)
            bar.update(task, advance=1)
            yield futures[future], model, run


def _trained_weights(record, train, valid, settings, seed, saved_progress, initial_weights) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`train_member` on structures, in a worker process; the weights travel both ways as numpy arrays."""
    initial_state = None if initial_weights is None else {name: torch.from_numpy(array) for name, array in initial_weights.items()}
    model, run = train_member(record, *_graphs(record, train, valid, settings), settings, seed,
                              saved_progress=saved_progress, initial_state=initial_state)
    return _as_numpy(model.state_dict()), run


def _as_numpy(state: dict[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    """Weights as numpy arrays, which travel between processes without a file descriptor per tensor."""
    return None if state is None else {name: tensor.detach().cpu().numpy() for name, tensor in state.items()}


def _graphs(record, train, valid, settings) -> tuple[list, list]:
    """The training and validation structures as labelled graphs of the settings' dtype."""
    dtype = resolve_dtype(settings.dtype)
    return (labelled_graphs(train, record, dtype, settings.energy_key, settings.forces_key),
            labelled_graphs(valid, record, dtype, settings.energy_key, settings.forces_key))


def training_data_hash(structures: Sequence[Atoms], energy_key: str, forces_key: str) -> str:
    """One hash of the training structures with their labels, so a checkpoint is tied to its data."""
    from mfal.hashing import settings_hash, structure_hash

    return settings_hash([
        [structure_hash(atoms), float(atoms.info[energy_key]),
         np.round(atoms.arrays[forces_key], 8).tolist() if forces_key in atoms.arrays else None]
        + ([structure_forces_weight(atoms)] if structure_forces_weight(atoms) != 1 else [])  # hashes of unweighted data unchanged
        for atoms in structures
    ])


def save_member(path: Path, identity: dict[str, Any], model: torch.nn.Module, run: dict[str, Any]) -> None:
    """Write one trained member (weights, run summary, what it was trained from); atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    torch.save({"identity": json.dumps(identity, sort_keys=True), "run": json.dumps(run),
                "state_dict": model.state_dict()}, partial)
    partial.replace(path)


def load_member(path: Path, identity: dict[str, Any], dtype: torch.dtype) -> tuple[torch.nn.Module, dict] | None:
    """The member saved at ``path`` if it was trained from exactly ``identity``; otherwise None."""
    if not path.is_file():
        return None
    content = torch.load(path, map_location="cpu", weights_only=True)
    if content.get("identity") != json.dumps(identity, sort_keys=True):
        return None
    model = build_model(identity["record"], dtype=dtype)
    model.load_state_dict(content["state_dict"], strict=True)
    return model, json.loads(content["run"])
