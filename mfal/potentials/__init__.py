"""MACE committees: architecture records, batched evaluation, persistence, base training.

The names below are imported lazily (on first use), so ``mfal.potentials.cli``
can be mounted in the ``mfal`` command without importing torch and mace until a
command actually runs. ``from mfal.potentials import Committee`` works as usual.
"""

from importlib import import_module

_EXPORTS = {
    "architecture_from_model": "mfal.potentials.architecture",
    "build_model": "mfal.potentials.architecture",
    "check_same_architecture": "mfal.potentials.architecture",
    "default_architecture": "mfal.potentials.architecture",
    "validate_architecture": "mfal.potentials.architecture",
    "Committee": "mfal.potentials.committee",
    "CommitteeCalculator": "mfal.potentials.committee",
    "CommitteePrediction": "mfal.potentials.committee",
    "frozen_parameters": "mfal.potentials.committee",
    "resolve_device": "mfal.potentials.committee",
    "resolve_dtype": "mfal.potentials.committee",
    "ArchitectureMismatchError": "mfal.potentials.errors",
    "ArchitectureRecordError": "mfal.potentials.errors",
    "CollapsedPathError": "mfal.potentials.errors",
    "CommitteeFileError": "mfal.potentials.errors",
    "CommitteeSizeError": "mfal.potentials.errors",
    "DeviceError": "mfal.potentials.errors",
    "PathCompositionError": "mfal.potentials.errors",
    "PotentialError": "mfal.potentials.errors",
    "TrainingDataError": "mfal.potentials.errors",
    "UnknownElementError": "mfal.potentials.errors",
    "atoms_to_batch": "mfal.potentials.graphs",
    "check_elements": "mfal.potentials.graphs",
    "labelled_keys": "mfal.potentials.graphs",
    "run_model": "mfal.potentials.graphs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mfal.potentials' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
