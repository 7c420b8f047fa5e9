"""A committee of MACE models: the potential (its mean) and its uncertainty (its spread).

All members share one architecture (cutoff, element table, layers), so the
graph of a set of structures is built once and every member reads it: one
forward pass per member for any number of structures (or, when only the
mean's forces are wanted, one pass of all members stacked into one model).

Persistence never unpickles code from a file mfal wrote or from the database:
weights travel as ``state_dict`` tensors loaded with ``torch.load(...,
weights_only=True)`` and the architecture as a JSON-able record. Whole pickled
models (``.model`` files from ``mace_run_train``) are read only by
:meth:`Committee.from_mace_model_files`, for local files the user names, and are
converted to state_dict + record at once.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import ase
import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mfal.potentials.architecture import (
    architecture_from_model,
    build_model,
    check_same_architecture,
    validate_architecture,
)
from mfal.potentials.errors import (
    ArchitectureRecordError,
    CommitteeFileError,
    CommitteeSizeError,
    DeviceError,
    PotentialError,
)
from mfal.potentials.graphs import atom_offsets, atoms_to_batch, check_elements, run_model
from mfal.potentials.stacked import StackedCommittee, stackable

DEFAULT_MIN_MEMBERS = 4
# Architecture-record values that are buffers of the built module, so its state dict sets them.
STATE_DICT_RECORD_KEYS = frozenset({"atomic_energies", "atomic_inter_scale", "atomic_inter_shift"})
"""Fewest members a committee needs by default for a spread worth acting on."""

COMMITTEE_FORMAT = "mfal.mace-committee"
COMMITTEE_FORMAT_VERSION = 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else must name a device this machine has."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1'...): "
                          f"{str(exc).splitlines()[0][:120]}") from None
    if resolved.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= available:
            raise DeviceError(f"device {device!r} is not available here: this machine has {available} CUDA "
                              "device(s); use 'auto' or 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Accept ``torch.float32``/``torch.float64`` or their names ``"float32"``/``"float64"``."""
    names = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, str):
        if dtype not in names:
            raise PotentialError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
        return names[dtype]
    if dtype not in names.values():
        raise PotentialError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Turn every parameter's ``requires_grad`` off inside the block and restore the flags after.

    For training code that enables gradients on a few parameters only; avoid
    it around plain evaluation calls (see :class:`Committee`).
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@dataclass(frozen=True)
class CommitteePrediction:
    """Per-member predictions for M structures by N members, in eV, eV/Å, eV/Å^3.

    ``forces`` concatenates the atoms of all structures in the order given;
    structure ``m`` owns rows ``atom_offsets[m]:atom_offsets[m+1]`` (see
    :meth:`structure_forces`). Spreads are population standard deviations
    across members (ddof = 0).
    """

    energies: np.ndarray
    """(N, M) total energies."""
    forces: np.ndarray | None
    """(N, total atoms, 3) forces; None when only their mean was asked for (``member_forces=False``)."""
    atom_offsets: np.ndarray
    """(M + 1,) atom offsets of each structure in ``forces``."""
    stresses: np.ndarray | None = None
    """(N, M, 3, 3) stress tensors, when requested."""
    mean_forces: np.ndarray | None = None
    """(total atoms, 3) committee-mean forces, when the members' own were not computed."""

    @property
    def n_members(self) -> int:
        return self.energies.shape[0]

    @property
    def n_structures(self) -> int:
        return self.energies.shape[1]

    @property
    def energy_mean(self) -> np.ndarray:
        """(M,) committee-mean energy."""
        return self.energies.mean(axis=0)

    @property
    def energy_spread(self) -> np.ndarray:
        """(M,) standard deviation of the members' energies."""
        return self.energies.std(axis=0)

    @property
    def forces_mean(self) -> np.ndarray:
        """(total atoms, 3) committee-mean forces (minus the gradient of the mean energy)."""
        return self.mean_forces if self.forces is None else self.forces.mean(axis=0)

    @property
    def forces_spread(self) -> np.ndarray:
        """(total atoms, 3) standard deviation of each force component across members."""
        return self._member_forces().std(axis=0)

    @property
    def stress_mean(self) -> np.ndarray | None:
        """(M, 3, 3) committee-mean stress, when requested."""
        return None if self.stresses is None else self.stresses.mean(axis=0)

    def structure_forces(self, index: int) -> np.ndarray:
        """(N, atoms of structure ``index``, 3) per-member forces of one structure."""
        start, stop = self.atom_offsets[index], self.atom_offsets[index + 1]
        return self._member_forces()[:, start:stop]

    def structure_forces_mean(self, index: int) -> np.ndarray:
        """(atoms of structure ``index``, 3) committee-mean forces of one structure."""
        start, stop = self.atom_offsets[index], self.atom_offsets[index + 1]
        return self.forces_mean[start:stop]

    def _member_forces(self) -> np.ndarray:
        if self.forces is None:
            raise PotentialError(
                "this prediction holds only the committee-mean forces; evaluate with member_forces=True "
                "for each member's forces and their spread"
            )
        return self.forces


class Committee:
    """N ScaleShiftMACE models of one architecture, evaluated together.

    Build one with :meth:`from_architecture` (fresh members), :meth:`load`
    (a file written by :meth:`save`), :meth:`from_store`,
    :meth:`from_state_dicts` or :meth:`from_mace_model_files`.

    ``models`` are live ``torch.nn.Module`` objects in ``dtype`` on ``device``,
    with ``requires_grad`` off on every parameter: forces need only position
    gradients, and switching the flag back and forth between calls makes the
    TorchScript-compiled e3nn layers re-specialise (several times slower).
    Training code (readout refit) turns on what it trains, e.g. inside
    :func:`frozen_parameters`, updates parameters in place and may then save
    the committee again. ``architectures`` holds one full
    record per member (they share all structural fields; see
    :mod:`mfal.potentials.architecture`).
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        architectures: Sequence[dict[str, Any]],
        *,
        dtype: str | torch.dtype = torch.float64,
        device: str | torch.device = "auto",
        head: str | None = None,
        min_members: int = DEFAULT_MIN_MEMBERS,
        names: Sequence[str] | None = None,
    ) -> None:
        if len(models) != len(architectures):
            raise PotentialError(
                f"got {len(models)} models but {len(architectures)} architecture records; give one per member"
            )
        if len(models) < min_members:
            raise CommitteeSizeError(
                f"a committee needs at least {min_members} members, got {len(models)}"
            )
        self.architectures = [validate_architecture(record) for record in architectures]
        check_same_architecture(self.architectures, names)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.models = [model.to(device=self.device, dtype=self.dtype) for model in models]
        for model in self.models:
            model.requires_grad_(False)
        heads = self.architecture["heads"]
        if head is None:
            defaults = [name for name in heads if name.lower() == "default"]
            if len(heads) == 1:
                head = heads[0]
            elif defaults:
                head = defaults[0]
            else:
                raise PotentialError(f"the members have heads {heads} and none is 'Default'; name the head to use")
        if head not in heads:
            raise PotentialError(f"head {head!r} is not one of the members' heads {heads}")
        self.head = head
        self._stacked: StackedCommittee | None = None

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_architecture(
        cls,
        architecture: dict[str, Any],
        n_members: int = DEFAULT_MIN_MEMBERS,
        *,
        seeds: Sequence[int] | None = None,
        **options: Any,
    ) -> "Committee":
        """``n_members`` freshly initialised members, member ``i`` seeded with ``seeds[i]`` (default ``i``).

        ``options`` are passed to the constructor (dtype, device, head, min_members).
        """
        seeds = list(range(n_members)) if seeds is None else list(seeds)
        if len(seeds) != n_members:
            raise PotentialError(f"got {len(seeds)} seeds for {n_members} members")
        dtype = resolve_dtype(options.get("dtype", torch.float64))
        models = []
        for seed in seeds:
            torch.manual_seed(int(seed))
            models.append(build_model(architecture, dtype=dtype))
        return cls(models, [architecture] * n_members, **options)

    @classmethod
    def from_state_dicts(
        cls,
        architectures: Sequence[dict[str, Any]],
        state_dicts: Sequence[dict[str, torch.Tensor]],
        **options: Any,
    ) -> "Committee":
        """Rebuild members from their records and weights (strict: every tensor must fit).

        Building a MACE module costs about a second (e3nn compiles its layers), a
        deep copy a tenth of that: members whose records differ only in values
        the state dict carries anyway (:data:`STATE_DICT_RECORD_KEYS`) are copies
        of the first one built, loaded with their own weights.
        """
        if len(architectures) != len(state_dicts):
            raise PotentialError(
                f"got {len(architectures)} architecture records but {len(state_dicts)} state dicts"
            )
        dtype = resolve_dtype(options.get("dtype", torch.float64))
        models, built = [], {}
        for index, (record, state_dict) in enumerate(zip(architectures, state_dicts)):
            shape = json.dumps({k: v for k, v in record.items() if k not in STATE_DICT_RECORD_KEYS}, sort_keys=True)
            model = copy.deepcopy(built[shape]) if shape in built else build_model(record, dtype=dtype)
            built.setdefault(shape, model)
            try:
                model.load_state_dict(state_dict, strict=True)
            except RuntimeError as exc:
                raise ArchitectureRecordError(
                    f"member {index}: weights do not fit its architecture record: {exc}"
                ) from exc
            models.append(model)
        return cls(models, architectures, **options)

    @classmethod
    def from_mace_model_files(cls, paths: Sequence[str | Path], **options: Any) -> "Committee":
        """A committee from whole-model ``.model`` files written by ``mace_run_train``.

        These files are pickles: they are unpickled (``weights_only=False``) and so
        must be local files the user trusts, never bytes from a database. Each is
        converted at once to a state_dict + architecture record, and the members
        are rebuilt from those, so the committee carries no pickled code onward.
        """
        paths = [Path(path) for path in paths]
        records, state_dicts = [], []
        for path in paths:
            if not path.is_file():
                raise CommitteeFileError(f"MACE model file {path} does not exist")
            try:
                model = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # any unpickling failure means: not a model file
                raise CommitteeFileError(f"{path} is not a readable MACE model file: {exc}") from exc
            if not isinstance(model, torch.nn.Module):
                raise CommitteeFileError(
                    f"{path} holds a {type(model).__name__}, not a whole MACE model as written by mace_run_train"
                )
            records.append(architecture_from_model(model))
            state_dicts.append(model.state_dict())
        options.setdefault("names", [str(path) for path in paths])
        check_same_architecture(records, options["names"])
        return cls.from_state_dicts(records, state_dicts, **options)

    # -- description ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.models)

    @property
    def architecture(self) -> dict[str, Any]:
        """Member 0's record; its structural fields hold for every member."""
        return self.architectures[0]

    @property
    def r_max(self) -> float:
        """Cutoff radius in Å."""
        return float(self.architecture["r_max"])

    @property
    def atomic_numbers(self) -> list[int]:
        """The element table the members were trained on."""
        return list(self.architecture["atomic_numbers"])

    def record(self) -> dict[str, Any]:
        """JSON-able description of the whole committee (the store's ``architecture`` field)."""
        return {
            "format": COMMITTEE_FORMAT,
            "version": COMMITTEE_FORMAT_VERSION,
            "n_members": len(self),
            "members": self.architectures,
        }

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Each member's weights, as CPU tensors."""
        return [{name: tensor.detach().cpu() for name, tensor in model.state_dict().items()} for model in self.models]

    # -- evaluation -----------------------------------------------------------
    def batch(self, structures: Sequence[ase.Atoms], **keys: Any):
        """One graph batch of ``structures`` for this committee (see :func:`atoms_to_batch`)."""
        return atoms_to_batch(
            structures,
            self.atomic_numbers,
            self.r_max,
            dtype=self.dtype,
            device=self.device,
            heads=self.architecture["heads"],
            head=self.head,
            **keys,
        )

    def evaluate(
        self, structures: Sequence[ase.Atoms] | ase.Atoms, *, stress: bool = False, member_forces: bool = True
    ) -> CommitteePrediction:
        """Energies and forces (and stress) of M structures by every member, in one call.

        The graph of all structures is built once; each member then runs one
        forward pass (with forces by autograd) over the whole batch.

        With ``member_forces=False`` (what an NEB needs: every member's energy,
        the mean's forces) a committee of a stackable architecture runs as one
        model of all members' channels (:mod:`mfal.potentials.stacked`), with
        one backward pass for the mean forces; the prediction then holds
        ``mean_forces`` and no per-member ``forces``.
        """
        if isinstance(structures, ase.Atoms):
            structures = [structures]
        structures = list(structures)
        if stress:
            for index, atoms in enumerate(structures):
                if atoms.cell.rank != 3:
                    raise PotentialError(
                        f"stress needs a cell with three lattice vectors; structure {index} has cell {atoms.cell.tolist()}"
                    )
        check_elements(structures, self.atomic_numbers)
        batch = self.batch(structures)
        stacked = None if member_forces or stress else self._stacked_members()
        if stacked is not None:
            energies, mean_forces = stacked.energies_and_mean_forces(batch)
            return CommitteePrediction(
                energies=energies.T.cpu().double().numpy(), forces=None, atom_offsets=atom_offsets(structures),
                mean_forces=mean_forces.cpu().double().numpy(),
            )
        energies, forces, stresses = [], [], []
        for model in self.models:
            output = run_model(model, batch, compute_stress=stress)
            energies.append(output["energy"])
            forces.append(output["forces"])
            if stress:
                stresses.append(output["stress"])
        return CommitteePrediction(
            energies=torch.stack(energies).cpu().double().numpy(),
            forces=torch.stack(forces).cpu().double().numpy(),
            atom_offsets=atom_offsets(structures),
            stresses=torch.stack(stresses).cpu().double().numpy() if stress else None,
        )

    def _stacked_members(self) -> StackedCommittee | None:
        """The members as one stacked model, refilled whenever a member's weights changed; None if unstackable."""
        if not stackable(self.architecture):
            return None
        if self._stacked is None or self._stacked.n_members != len(self.models):
            self._stacked = StackedCommittee(self.models, self.architecture)
        elif not self._stacked.stacks(self.models):
            self._stacked.restack(self.models)
        return self._stacked

    def calculator(self) -> "CommitteeCalculator":
        """An ASE calculator giving the committee mean (and spreads in ``results``)."""
        return CommitteeCalculator(self)

    # -- persistence ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The members' weights as ``torch.save`` bytes (loadable with ``weights_only=True``)."""
        buffer = io.BytesIO()
        torch.save({"state_dicts": self.state_dicts()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, record: dict[str, Any], payload: bytes, **options: Any) -> "Committee":
        """Rebuild from :meth:`record` and :meth:`to_bytes` output (never unpickles code)."""
        members = _members_of(record)
        try:
            weights = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CommitteeFileError(f"committee weights are not readable as plain tensors: {exc}") from exc
        if not isinstance(weights, dict) or "state_dicts" not in weights:
            raise CommitteeFileError("committee weights lack their 'state_dicts' entry")
        return cls.from_state_dicts(members, weights["state_dicts"], **options)

    def save(self, path: str | Path) -> Path:
        """Write the committee (record + weights) to one file, loadable with :meth:`load`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": COMMITTEE_FORMAT,
                "record_json": json.dumps(self.record()),
                "state_dicts": self.state_dicts(),
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> "Committee":
        """Read a file written by :meth:`save` (``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise CommitteeFileError(f"committee file {path} does not exist")
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CommitteeFileError(
                f"{path} is not an mfal committee file (for mace_run_train .model files use "
                f"Committee.from_mace_model_files): {exc}"
            ) from exc
        if not isinstance(content, dict) or content.get("format") != COMMITTEE_FORMAT:
            raise CommitteeFileError(f"{path} is not an mfal committee file (format {COMMITTEE_FORMAT!r})")
        record = json.loads(content["record_json"])
        return cls.from_state_dicts(_members_of(record), content["state_dicts"], **options)

    def to_store(
        self,
        store,
        key: str,
        *,
        parent: str | None = None,
        label_ids: Sequence[Any] = (),
        metrics: dict | None = None,
        **extra: Any,
    ) -> str:
        """Put the committee into the provenance store under ``key`` (idempotent); returns ``key``."""
        return store.put_model(
            key,
            self.to_bytes(),
            self.record(),
            parent=parent,
            label_ids=label_ids,
            metrics=metrics,
            **extra,
        )

    @classmethod
    def from_store(cls, store, key: str, **options: Any) -> "Committee":
        """Rebuild the committee stored under ``key`` (weights loaded with ``weights_only=True``)."""
        record, payload = store.get_model(key)
        return cls.from_bytes(record["architecture"], payload, **options)

    def export_mace_models(self, directory: str | Path, stem: str = "member") -> list[Path]:
        """Write each member as a whole pickled ``.model`` file, as ``mace_run_train`` does.

        For use with mace's own tools (``MACECalculator(model_paths=...)``,
        ``mace_run_train --foundation_model``); mfal itself never reads these back
        from anywhere but a user's own disk.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, model in enumerate(self.models):
            path = directory / f"{stem}_{index}.model"
            torch.save(model, path)
            paths.append(path)
        return paths


class CommitteeCalculator(Calculator):
    """ASE calculator for the committee mean, with the spread alongside.

    ``results`` holds ``energy``/``free_energy``/``forces`` (and ``stress``) of the
    mean, and ``energy_spread``/``forces_spread`` (std across members) and
    ``energies_committee``/``forces_committee`` (per member).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, committee: Committee, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.committee = committee

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        prediction = self.committee.evaluate([self.atoms], stress=want_stress)
        self.results = {
            "energy": float(prediction.energy_mean[0]),
            "free_energy": float(prediction.energy_mean[0]),
            "forces": prediction.forces_mean,
            "energy_spread": float(prediction.energy_spread[0]),
            "forces_spread": prediction.forces_spread,
            "energies_committee": prediction.energies[:, 0],
            "forces_committee": prediction.forces,
        }
        if want_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(prediction.stress_mean[0])


def _members_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-member architecture records of a committee record, after checking its format."""
    if not isinstance(record, dict) or record.get("format") != COMMITTEE_FORMAT:
        raise CommitteeFileError(
            f"not an mfal committee record (expected format {COMMITTEE_FORMAT!r}, got "
            f"{record.get('format') if isinstance(record, dict) else type(record).__name__!r})"
        )
    if record.get("version") != COMMITTEE_FORMAT_VERSION:
        raise CommitteeFileError(
            f"committee record version {record.get('version')!r} is not supported (this mfal reads {COMMITTEE_FORMAT_VERSION})"
        )
    return list(record["members"])
