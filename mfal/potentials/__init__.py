"""MACE committees: architecture records, batched evaluation, persistence, base training.

Importing this package imports torch and mace; :mod:`mfal` itself stays light.
"""

from mfal.potentials.architecture import (
    architecture_from_model,
    build_model,
    check_same_architecture,
    default_architecture,
    validate_architecture,
)
from mfal.potentials.committee import (
    Committee,
    CommitteeCalculator,
    CommitteePrediction,
    frozen_parameters,
    resolve_device,
    resolve_dtype,
)
from mfal.potentials.errors import (
    ArchitectureMismatchError,
    ArchitectureRecordError,
    CommitteeFileError,
    CommitteeSizeError,
    PathCompositionError,
    PotentialError,
    TrainingDataError,
    UnknownElementError,
)
from mfal.potentials.graphs import atoms_to_batch, check_elements, labelled_keys, run_model

__all__ = [
    "ArchitectureMismatchError",
    "ArchitectureRecordError",
    "Committee",
    "CommitteeCalculator",
    "CommitteeFileError",
    "CommitteePrediction",
    "CommitteeSizeError",
    "PathCompositionError",
    "PotentialError",
    "TrainingDataError",
    "UnknownElementError",
    "architecture_from_model",
    "atoms_to_batch",
    "build_model",
    "check_elements",
    "check_same_architecture",
    "default_architecture",
    "frozen_parameters",
    "labelled_keys",
    "resolve_device",
    "resolve_dtype",
    "run_model",
    "validate_architecture",
]
