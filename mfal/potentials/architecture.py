"""JSON-able architecture records for ScaleShiftMACE models.

A record holds everything needed to rebuild one model with mace's own classes
(classes and activation functions by name, irreps as strings, arrays as lists),
so that a model can be stored as ``state_dict`` + record and loaded with
``torch.load(..., weights_only=True)`` without unpickling code.

Members of one committee must agree on every *structural* field; they may
differ in the per-member constants fitted from their own training data
(:data:`MEMBER_CONSTANT_FIELDS`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import mace.modules  # imported before e3nn, which needs mace's torch.load setup
import numpy as np
import torch
from e3nn import o3
from mace.modules.models import ScaleShiftMACE
from mace.tools.scripts_utils import extract_config_mace_model

from mfal.potentials.errors import ArchitectureMismatchError, ArchitectureRecordError

MODEL_CLASS = "ScaleShiftMACE"

MEMBER_CONSTANT_FIELDS = (
    "atomic_energies",
    "avg_num_neighbors",
    "atomic_inter_scale",
    "atomic_inter_shift",
)
"""Fields fitted from each member's own training data; they may differ inside a committee."""

STRUCTURAL_FIELDS = (
    "model_class",
    "r_max",
    "num_bessel",
    "num_polynomial_cutoff",
    "max_ell",
    "interaction_cls",
    "interaction_cls_first",
    "num_interactions",
    "hidden_irreps",
    "MLP_irreps",
    "atomic_numbers",
    "correlation",
    "gate",
    "radial_type",
    "radial_MLP",
    "heads",
    "pair_repulsion",
    "distance_transform",
    "apply_cutoff",
    "use_reduced_cg",
    "use_so3",
    "use_agnostic_product",
    "use_last_readout_only",
    "use_edge_irreps_first",
    "edge_irreps",
    "readout_cls",
)
"""Fields every member of one committee must share: they fix the graph and the layers."""

ARCHITECTURE_FIELDS = STRUCTURAL_FIELDS + MEMBER_CONSTANT_FIELDS

DEFAULT_R_MAX = 5.0
DEFAULT_CHANNELS = 16
DEFAULT_MAX_L = 1
DEFAULT_NUM_INTERACTIONS = 2
DEFAULT_CORRELATION = 3
DEFAULT_MAX_ELL = 2


def default_architecture(
    atomic_numbers: Sequence[int],
    atomic_energies: Sequence[float],
    avg_num_neighbors: float,
    *,
    atomic_inter_scale: float = 1.0,
    atomic_inter_shift: float = 0.0,
    r_max: float = DEFAULT_R_MAX,
    channels: int = DEFAULT_CHANNELS,
    max_L: int = DEFAULT_MAX_L,
    num_interactions: int = DEFAULT_NUM_INTERACTIONS,
    correlation: int = DEFAULT_CORRELATION,
    max_ell: int = DEFAULT_MAX_ELL,
    num_bessel: int = 8,
    num_polynomial_cutoff: int = 5,
    radial_MLP: Sequence[int] = (64, 64, 64),
    pair_repulsion: bool = False,
) -> dict[str, Any]:
    """The small architecture mfal trains by default.

    16 channels, L = 1 (hidden irreps ``16x0e+16x1o``), spherical harmonics up
    to ``max_ell`` = 2 on the edges, 2 interactions and a 5 Å cutoff: tens of
    ms for forward + forces of a 26-atom MoS2 cell on 2 CPU cores, which keeps
    a committee NEB cheap while resolving the barrier region.

    ``pair_repulsion`` adds MACE's ZBL screened-nuclear repulsion (zero beyond
    the sum of the pair's covalent radii) under the learned energy. Message-passing
    features grow like 1/r as two atoms close in, so without it a committee that
    never saw two atoms closer than a bond can put an arbitrarily deep hole there,
    and a NEB falls into it: the first MoS2 committees pulled two S atoms to
    0.08 Å at -10^6 eV.

    ``atomic_numbers`` is the element table (sorted here); ``atomic_energies``
    gives the isolated-atom reference energy E0 (eV) of each, in the same order
    as the given ``atomic_numbers``.
    """
    if len(atomic_numbers) != len(atomic_energies):
        raise ArchitectureRecordError(
            f"atomic_numbers has {len(atomic_numbers)} entries but atomic_energies has "
            f"{len(atomic_energies)}; give one E0 per element"
        )
    if max_L < 0:
        raise ArchitectureRecordError(f"max_L must be >= 0, got {max_L}")
    order = np.argsort(np.asarray(atomic_numbers))
    zs = [int(atomic_numbers[i]) for i in order]
    e0s = [float(atomic_energies[i]) for i in order]
    parities = ["e", "o"]
    hidden = "+".join(f"{channels}x{ell}{parities[ell % 2]}" for ell in range(max_L + 1))
    record = {
        "model_class": MODEL_CLASS,
        "r_max": float(r_max),
        "num_bessel": int(num_bessel),
        "num_polynomial_cutoff": int(num_polynomial_cutoff),
        "max_ell": int(max_ell),
        "interaction_cls": "RealAgnosticResidualInteractionBlock",
        "interaction_cls_first": "RealAgnosticResidualInteractionBlock",
        "num_interactions": int(num_interactions),
        "hidden_irreps": str(o3.Irreps(hidden)),
        "MLP_irreps": f"{channels}x0e",
        "atomic_numbers": zs,
        "correlation": int(correlation),
        "gate": "silu",
        "radial_type": "bessel",
        "radial_MLP": [int(width) for width in radial_MLP],
        "heads": ["Default"],
        "pair_repulsion": bool(pair_repulsion),
        "distance_transform": "None",
        "apply_cutoff": True,
        "use_reduced_cg": True,
        "use_so3": False,
        "use_agnostic_product": False,
        "use_last_readout_only": False,
        "use_edge_irreps_first": False,
        "edge_irreps": None,
        "readout_cls": "NonLinearReadoutBlock",
        "atomic_energies": e0s,
        "avg_num_neighbors": float(avg_num_neighbors),
        "atomic_inter_scale": float(atomic_inter_scale),
        "atomic_inter_shift": float(atomic_inter_shift),
    }
    return validate_architecture(record)


def validate_architecture(record: dict[str, Any]) -> dict[str, Any]:
    """Check a record names known mace parts and holds every field; return a plain copy.

    Raises :class:`ArchitectureRecordError` naming the missing or unknown entry.
    """
    if not isinstance(record, dict):
        raise ArchitectureRecordError(f"an architecture record is a dict, got {type(record).__name__}")
    missing = [name for name in ARCHITECTURE_FIELDS if name not in record]
    if missing:
        raise ArchitectureRecordError(f"architecture record lacks fields {missing}")
    unknown = sorted(set(record) - set(ARCHITECTURE_FIELDS))
    if unknown:
        raise ArchitectureRecordError(
            f"architecture record has unknown fields {unknown}; allowed: {list(ARCHITECTURE_FIELDS)}"
        )
    if record["model_class"] != MODEL_CLASS:
        raise ArchitectureRecordError(
            f"model_class {record['model_class']!r} is not supported; only {MODEL_CLASS!r}"
        )
    for field in ("interaction_cls", "interaction_cls_first"):
        if record[field] not in mace.modules.interaction_classes:
            raise ArchitectureRecordError(
                f"{field} {record[field]!r} is not a mace interaction block; "
                f"known: {sorted(mace.modules.interaction_classes)}"
            )
    if record["readout_cls"] not in mace.modules.readout_classes:
        raise ArchitectureRecordError(
            f"readout_cls {record['readout_cls']!r} is not a mace readout block; "
            f"known: {sorted(mace.modules.readout_classes)}"
        )
    if record["gate"] not in mace.modules.gate_dict:
        raise ArchitectureRecordError(
            f"gate {record['gate']!r} is not a mace gate; known: {sorted(mace.modules.gate_dict)}"
        )
    if not (isinstance(record["r_max"], (int, float)) and math.isfinite(record["r_max"]) and record["r_max"] > 0):
        raise ArchitectureRecordError(f"r_max must be a positive number of Å, got {record['r_max']!r}")
    zs = list(record["atomic_numbers"])
    if zs != sorted(set(zs)) or not all(1 <= int(z) <= 118 for z in zs):
        raise ArchitectureRecordError(
            f"atomic_numbers must be distinct, sorted atomic numbers in 1..118, got {zs}"
        )
    for field in ("hidden_irreps", "MLP_irreps"):
        try:
            o3.Irreps(record[field])
        except (ValueError, AssertionError) as exc:
            raise ArchitectureRecordError(f"{field} {record[field]!r} is not an irreps string: {exc}") from exc
    return _json_copy(record)


def structural_part(record: dict[str, Any]) -> dict[str, Any]:
    """The fields that must agree between committee members."""
    return {name: record[name] for name in STRUCTURAL_FIELDS}


def check_same_architecture(records: Sequence[dict[str, Any]], names: Iterable[str] | None = None) -> None:
    """Raise :class:`ArchitectureMismatchError` unless all records share their structural fields.

    ``names`` labels the members in the message (file names, keys); defaults to indices.
    """
    labels = list(names) if names is not None else [f"member {i}" for i in range(len(records))]
    reference = structural_part(records[0])
    for label, record in zip(labels[1:], records[1:]):
        other = structural_part(record)
        differing = [name for name in STRUCTURAL_FIELDS if other[name] != reference[name]]
        if differing:
            details = "; ".join(
                f"{name}: {reference[name]!r} ({labels[0]}) vs {other[name]!r} ({label})"
                for name in differing
            )
            raise ArchitectureMismatchError(
                f"committee members must share one architecture, but {label} differs from "
                f"{labels[0]} in {details}"
            )


def build_model(record: dict[str, Any], dtype: torch.dtype = torch.float64) -> ScaleShiftMACE:
    """A freshly initialised ScaleShiftMACE built from a record, with parameters in ``dtype``.

    Initial weights follow torch's global random state: seed it first for reproducible members.
    """
    record = validate_architecture(record)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with warnings.catch_warnings():
            # e3nn scripts its layers while building them and warns about annotations it ignores
            warnings.filterwarnings("ignore", message="The TorchScript type system")
            model = ScaleShiftMACE(
                r_max=record["r_max"],
                num_bessel=record["num_bessel"],
                num_polynomial_cutoff=record["num_polynomial_cutoff"],
                max_ell=record["max_ell"],
                interaction_cls=mace.modules.interaction_classes[record["interaction_cls"]],
                interaction_cls_first=mace.modules.interaction_classes[record["interaction_cls_first"]],
                num_interactions=record["num_interactions"],
                num_elements=len(record["atomic_numbers"]),
                hidden_irreps=o3.Irreps(record["hidden_irreps"]),
                MLP_irreps=o3.Irreps(record["MLP_irreps"]),
                atomic_energies=np.asarray(record["atomic_energies"], dtype=np.float64),
                avg_num_neighbors=record["avg_num_neighbors"],
                atomic_numbers=list(record["atomic_numbers"]),
                correlation=record["correlation"],
                gate=mace.modules.gate_dict[record["gate"]],
                pair_repulsion=record["pair_repulsion"],
                apply_cutoff=record["apply_cutoff"],
                use_reduced_cg=record["use_reduced_cg"],
                use_so3=record["use_so3"],
                use_agnostic_product=record["use_agnostic_product"],
                use_last_readout_only=record["use_last_readout_only"],
                distance_transform=record["distance_transform"],
                edge_irreps=o3.Irreps(record["edge_irreps"]) if record["edge_irreps"] is not None else None,
                use_edge_irreps_first=record["use_edge_irreps_first"],
                radial_MLP=list(record["radial_MLP"]),
                radial_type=record["radial_type"],
                heads=list(record["heads"]),
                readout_cls=mace.modules.readout_classes[record["readout_cls"]],
                atomic_inter_scale=record["atomic_inter_scale"],
                atomic_inter_shift=record["atomic_inter_shift"],
            )
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)


def architecture_from_model(model: torch.nn.Module) -> dict[str, Any]:
    """The record of a live ScaleShiftMACE (e.g. one unpickled from a ``mace_run_train`` file).

    Uses mace's own ``extract_config_mace_model`` and turns its classes,
    functions and arrays into names and lists. Raises
    :class:`ArchitectureRecordError` for models mfal cannot rebuild (other model
    classes, embeddings, cuequivariance layouts).
    """
    if type(model).__name__ != MODEL_CLASS:
        raise ArchitectureRecordError(
            f"only {MODEL_CLASS} models can join a committee, got {type(model).__name__}"
        )
    config = extract_config_mace_model(model)
    if config.get("embedding_specs") is not None:
        raise ArchitectureRecordError("models with extra embeddings (embedding_specs) are not supported")
    if config.get("cueq_config") is not None and getattr(config["cueq_config"], "enabled", False):
        raise ArchitectureRecordError(
            "cuequivariance models are not supported; convert back with mace's convert_cueq_e3nn first"
        )
    gate = config["gate"]
    gate_name = next(
        (name for name, function in mace.modules.gate_dict.items() if function is gate),
        None,
    )
    if gate_name is None:
        raise ArchitectureRecordError(f"gate {gate!r} is not one of mace's gates {sorted(mace.modules.gate_dict)}")
    record = {
        "model_class": MODEL_CLASS,
        "r_max": float(config["r_max"]),
        "num_bessel": int(config["num_bessel"]),
        "num_polynomial_cutoff": int(config["num_polynomial_cutoff"]),
        "max_ell": int(config["max_ell"]),
        "interaction_cls": config["interaction_cls"].__name__,
        "interaction_cls_first": config["interaction_cls_first"].__name__,
        "num_interactions": int(config["num_interactions"]),
        "hidden_irreps": str(config["hidden_irreps"]),
        "MLP_irreps": str(config["MLP_irreps"]),
        "atomic_numbers": [int(z) for z in config["atomic_numbers"]],
        "correlation": int(config["correlation"]),
        "gate": gate_name,
        "radial_type": config["radial_type"],
        "radial_MLP": [int(width) for width in config["radial_MLP"]],
        "heads": [str(head) for head in config["heads"]],
        "pair_repulsion": bool(config["pair_repulsion"]),
        "distance_transform": config["distance_transform"] or "None",
        "apply_cutoff": bool(config["apply_cutoff"]),
        "use_reduced_cg": bool(config["use_reduced_cg"]),
        "use_so3": bool(config["use_so3"]),
        "use_agnostic_product": bool(config["use_agnostic_product"]),
        "use_last_readout_only": bool(config["use_last_readout_only"]),
        "use_edge_irreps_first": bool(config["use_edge_irreps_first"]),
        "edge_irreps": str(config["edge_irreps"]) if config["edge_irreps"] is not None else None,
        "readout_cls": config["readout_cls"].__name__,
        "atomic_energies": np.asarray(config["atomic_energies"], dtype=np.float64).tolist(),
        "avg_num_neighbors": float(config["avg_num_neighbors"]),
        "atomic_inter_scale": np.asarray(config["atomic_inter_scale"], dtype=np.float64).tolist(),
        "atomic_inter_shift": np.asarray(config["atomic_inter_shift"], dtype=np.float64).tolist(),
    }
    return validate_architecture(record)


def _json_copy(value: Any) -> Any:
    """A deep copy made only of dict/list/str/int/float/bool/None."""
    if isinstance(value, dict):
        return {str(key): _json_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_copy(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ArchitectureRecordError(f"architecture records hold only JSON values, got {type(value).__name__}: {value!r}")
