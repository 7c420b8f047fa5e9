"""Readout refit from provenance-store records, written back as a new model record.

The parent must be the DFT-trained base committee (never an earlier refit: the
force reference would drift). Labels are read by id, their structures by hash;
every input is checked before any model work, and no model is written unless
the refit succeeded. The new record holds the parent, the label ids, lambda or
delta, the settings, the anchors' structure hashes and the refit metrics (chi2
per label, force deviation RMS and max, wall time, calibration). Its key is
derived from all of these inputs, so a retried task finds its own record again
instead of writing a second one. The parent members' force responses on the
anchors, which depend on nothing else, are kept in the store as they are
computed, so a later cycle computes only those of its new NEB images
(:mod:`mfal.potentials.refit_responses`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import ase

from mfal.hashing import settings_hash, structure_hash
from mfal.potentials.committee import Committee
from mfal.potentials.refit import (
    EnergyLabel,
    RefitInputError,
    RefitResult,
    check_label_elements,
    refit_committee,
)
from mfal.potentials.refit_responses import StoreResponseCache
from mfal.potentials.refit_settings import RefitSettings

REFIT_KIND = "readout_refit"
"""``kind`` field of model records written by :func:`refit_from_store`."""


@dataclass(frozen=True)
class StoredRefit:
    """Key of the new model record and the refit that produced it."""

    key: str
    result: RefitResult


def refit_key(parent: str, label_ids: Sequence[str], settings: RefitSettings, anchor_hashes: Sequence[str]) -> str:
    """Model key determined by the refit's inputs (same inputs, same key)."""
    digest = settings_hash(
        {
            "parent": parent,
            "labels": sorted(label_ids),
            "settings": settings.model_dump(mode="json"),
            "anchors": list(anchor_hashes),
        }
    )
    return f"refit-{digest[:24]}"


def labels_from_store(store, label_ids: Sequence[Any]) -> list[EnergyLabel]:
    """Labels and their structures; a missing structure or a bad error bar is a :class:`RefitInputError`."""
    labels = []
    for doc in store.get_labels(label_ids):
        label_id = str(doc["_id"])
        if not store.has_structure(doc["structure_hash"]):
            raise RefitInputError(
                f"label {label_id} refers to structure {doc['structure_hash']}, which is not in the store"
            )
        energy, error = doc.get("energy"), doc.get("error")
        for what, value in (("energy", energy), ("error bar", error)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise RefitInputError(f"label {label_id}: {what} must be a finite number of eV, got {value!r}")
        if error < 0:
            raise RefitInputError(f"label {label_id}: error bar must be >= 0 eV, got {error}")
        labels.append(
            EnergyLabel(store.get_structure(doc["structure_hash"]), float(energy), float(error), label_id=label_id)
        )
    return labels


def refit_from_store(
    store,
    parent: str,
    label_ids: Sequence[Any],
    anchors: Sequence[ase.Atoms],
    settings: RefitSettings | None = None,
    *,
    key: str | None = None,
    **committee_options: Any,
) -> StoredRefit:
    """Refit the committee stored under ``parent`` on labels ``label_ids`` and store the result.

    ``anchors`` are the force-constraint structures (DFT training set plus the
    current NEB images). ``committee_options`` go to :meth:`Committee.from_store`
    (device, dtype, min_members). Returns the new key and the refit result.
    """
    settings = settings or RefitSettings()
    record, _ = store.get_model(parent)
    if record.get("kind") == REFIT_KIND:
        raise RefitInputError(
            f"model {parent!r} is itself a readout refit (of {record.get('parent')!r}); refit from the "
            "DFT-trained base so the force reference does not drift from cycle to cycle"
        )
    labels = labels_from_store(store, label_ids)
    check_label_elements(labels, _atomic_numbers(record))
    ids = [label.label_id for label in labels]
    committee = Committee.from_store(store, parent, **committee_options)
    result = refit_committee(committee, labels, anchors, settings, response_cache=StoreResponseCache(store))
    anchor_hashes = [structure_hash(atoms) for atoms in anchors]
    key = key or refit_key(parent, ids, settings, anchor_hashes)
    result.committee.to_store(
        store,
        key,
        parent=parent,
        label_ids=ids,
        metrics=result.metrics,
        kind=REFIT_KIND,
        force_weight=settings.force_weight,
        force_rms_tolerance=settings.force_rms_tolerance,
        refit_settings=settings.model_dump(mode="json"),
        anchor_hashes=anchor_hashes,
    )
    return StoredRefit(key=key, result=result)


def _atomic_numbers(record: dict) -> list[int]:
    """The element table of a stored committee, read from its record (no model is built)."""
    return list(record["architecture"]["members"][0]["atomic_numbers"])
