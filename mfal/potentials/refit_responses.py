"""The anchors' force responses, computed once per (base member, structure) and reused.

Every cycle of a campaign refits the same DFT-trained base committee, and most
of its anchors (the DFT structures) are the same in every cycle, so the force
design D of an anchor, one backward pass per output weight and most of a
refit's cost, is the same from cycle to cycle. :class:`AnchorResponses` looks
each anchor up by (member fingerprint, structure hash) in a
:class:`ResponseCache` and computes only the missing ones, in graph batches.
In a campaign the cache is the provenance store, so later cycles, retried
tasks and other nodes reuse what one refit computed; without a store it lasts
one refit (an anchor given twice is still computed once).

An anchor's rows of D are the same whether it is computed alone or in a batch:
its positions enter only its own energy. Structures are identified by
:func:`~mfal.hashing.structure_hash`, whose positions are rounded to 1e-6 Å.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import ase
import numpy as np

from mfal.hashing import settings_hash, structure_hash, weights_hash
from mfal.potentials.committee import Committee
from mfal.potentials.refit_linear import ForceResponse, concatenate_force_responses, force_response


class ResponseCache(Protocol):
    """Force responses by key; a key's response never changes."""

    def get_many(self, keys: Iterable[str]) -> dict[str, ForceResponse]: ...

    def put(self, key: str, response: ForceResponse) -> None: ...


class MemoryResponseCache:
    """Responses held for the lifetime of the object."""

    def __init__(self) -> None:
        self._responses: dict[str, ForceResponse] = {}

    def get_many(self, keys: Iterable[str]) -> dict[str, ForceResponse]:
        return {key: self._responses[key] for key in keys if key in self._responses}

    def put(self, key: str, response: ForceResponse) -> None:
        self._responses[key] = response


class StoreResponseCache:
    """Responses kept in the provenance store (:meth:`mfal.store.Store.put_force_response`)."""

    def __init__(self, store) -> None:
        self.store = store

    def get_many(self, keys: Iterable[str]) -> dict[str, ForceResponse]:
        return {
            key: ForceResponse(forces=forces, design=design)
            for key, (forces, design) in self.store.get_force_responses(keys).items()
        }

    def put(self, key: str, response: ForceResponse) -> None:
        self.store.put_force_response(key, response.forces, response.design)


def member_fingerprint(committee: Committee, member: int) -> str:
    """Identity of one member as a force model: its exact weights (dtype included) and its record."""
    state = committee.models[member].state_dict()
    return settings_hash({"weights": weights_hash(state), "architecture": committee.architectures[member]})


class AnchorResponses:
    """Each member's force response on ``anchors``, from ``cache`` where it holds them."""

    def __init__(self, committee: Committee, anchors: Sequence[ase.Atoms], batch_size: int,
                 cache: ResponseCache | None = None) -> None:
        self.committee = committee
        self.anchors = list(anchors)
        self.batch_size = batch_size
        self.cache = cache if cache is not None else MemoryResponseCache()
        self.structure_keys = [structure_hash(atoms) for atoms in self.anchors]
        self.computed = 0
        self.reused = 0
        self._batches: dict[tuple[int, ...], object] = {}

    def for_member(self, member: int) -> ForceResponse:
        """Member ``member``'s forces and force design on all anchors, rows in anchor order."""
        fingerprint = member_fingerprint(self.committee, member)
        keys = [f"{fingerprint}:{structure}" for structure in self.structure_keys]
        found = self.cache.get_many(set(keys))
        self.reused += len(found)
        first_missing = {}
        for index, key in enumerate(keys):
            if key not in found:
                first_missing.setdefault(key, index)
        missing = list(first_missing.values())
        for start in range(0, len(missing), self.batch_size):
            chunk = tuple(missing[start : start + self.batch_size])
            response = force_response(self.committee.models[member], self._batch(chunk))
            for index, part in zip(chunk, self._split(response, chunk)):
                self.cache.put(keys[index], part)
                found[keys[index]] = part
        self.computed += len(missing)
        return concatenate_force_responses([found[key] for key in keys])

    def _batch(self, chunk: tuple[int, ...]):
        """One graph batch per chunk, shared by members that miss the same anchors."""
        if chunk not in self._batches:
            self._batches[chunk] = self.committee.batch([self.anchors[index] for index in chunk])
        return self._batches[chunk]

    def _split(self, response: ForceResponse, chunk: tuple[int, ...]) -> list[ForceResponse]:
        """A batch's response cut into one per structure (its atoms are in batch order)."""
        bounds = np.cumsum([0] + [3 * len(self.anchors[index]) for index in chunk])
        return [
            ForceResponse(forces=response.forces[lo:hi].copy(), design=response.design[lo:hi].copy())
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ]
