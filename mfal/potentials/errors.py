"""Exceptions raised by the committee engine.

Each names the offending value and what would have been accepted, and is raised
before any model is built or evaluated.
"""

from mfal.errors import MfalError


class PotentialError(MfalError, ValueError):
    """Base class for bad input to the committee engine."""


class UnknownElementError(PotentialError):
    """A structure holds an element the committee was not trained on."""


class ArchitectureMismatchError(PotentialError):
    """Members of one committee differ in architecture (cutoff, elements, layers...)."""


class ArchitectureRecordError(PotentialError):
    """An architecture record is incomplete or names something mace does not know."""


class CommitteeFileError(PotentialError):
    """A committee or model file is missing, of the wrong kind, or unreadable."""


class CommitteeSizeError(PotentialError):
    """A committee was given too few members."""


class TrainingDataError(PotentialError):
    """Training structures lack the labels (energy, forces) the loss needs."""


class PathCompositionError(PotentialError):
    """NEB endpoints (or images) differ in composition or atom order."""


class CollapsedPathError(PotentialError):
    """An NEB image has two atoms pressed together, where a committee without repulsion has a hole."""


class DeviceError(PotentialError):
    """A torch device is misspelt, or names hardware this machine does not have."""
