"""Content hashes that give structures and method settings a stable identity.

A label is keyed by (structure hash, settings hash), so the same QMC calculation
is recognised however many times a task is retried, and never computed twice.
Positions and cell are rounded to 1e-6 Å so that harmless float noise from a
round trip through a file or the database does not change the identity.
"""

import hashlib
import json

import numpy as np

POSITION_DECIMALS = 6


def structure_hash(atoms) -> str:
    """sha256 hex digest of (atomic numbers, rounded positions, rounded cell, pbc)."""
    record = {
        "numbers": [int(z) for z in atoms.get_atomic_numbers()],
        "positions": _rounded(atoms.get_positions()),
        "cell": _rounded(np.asarray(atoms.get_cell())),
        "pbc": [bool(p) for p in atoms.get_pbc()],
    }
    return _digest(record)


def settings_hash(settings: dict) -> str:
    """sha256 hex digest of the canonical JSON (sorted keys) of a JSON-able dict."""
    return _digest(settings)


def weights_hash(state) -> str:
    """sha256 of a state dict's names, dtypes, shapes and exact values (tensors or arrays).

    Unlike :func:`structure_hash` nothing is rounded: two models that differ in
    any weight are different models.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _rounded(array: np.ndarray) -> list:
    # Adding 0.0 turns -0.0 into 0.0 so that signed zeros do not change the hash.
    return (np.round(np.asarray(array, dtype=float), POSITION_DECIMALS) + 0.0).tolist()


def _digest(record) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
