"""Errors raised when a reaction system or its reference calculation is asked for
something it cannot build (a supercell too small for the hop, a negative bond
length, an unknown basis set)."""

from mfal.errors import MfalError


class SystemSpecError(MfalError, ValueError):
    """A structure-builder or calculator argument is out of the allowed range."""
