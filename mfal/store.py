"""The provenance store: every structure, label, model, NEB path and cycle of a campaign.

All writes are idempotent on a unique key, so a FireWorks task retried after a
crash never duplicates a record:

====================  ==================================  ==========================================
collection            unique key                          what a second write does
====================  ==================================  ==========================================
mfal_structures       content hash (``_id``)              nothing (same content, same hash)
mfal_labels           (structure_hash, settings_hash)     nothing: a QMC result is never overwritten
mfal_models           model key (``_id``)                 nothing if the payload is the same, else error
mfal_campaigns        campaign name (``_id``)             nothing if the config is the same, else error
mfal_cycles           (campaign, cycle)                   updates the given fields
mfal_neb_paths        (campaign, cycle)                   replaces the path
mfal_force_responses  (member fingerprint, structure)     nothing (a response depends on its key alone)
====================  ==================================  ==========================================

Model weights live in GridFS (bucket ``mfal_model_files``) as opaque bytes: the
store never unpickles anything; callers load them with ``weights_only=True``.
Collections are prefixed ``mfal_`` so that they share a database with
FireWorks' own collections without colliding. Because every write is
idempotent, each method is retried with backoff while the server is
unreachable (:mod:`mfal.reconnect`): a database restart in the middle of a step
delays the step instead of failing it.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone

import gridfs
import numpy as np
from bson import Binary, ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from mfal.errors import StoreError
from mfal.hashing import settings_hash, structure_hash
from mfal.reconnect import retry_when_unreachable

LABEL_REQUIRED_FIELDS = ("structure_hash", "settings", "energy", "error", "fidelity", "method")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """Provenance records of mfal campaigns in one MongoDB database."""

    def __init__(self, database):
        self.db = database
        self.structures = database["mfal_structures"]
        self.labels = database["mfal_labels"]
        self.models = database["mfal_models"]
        self.campaigns = database["mfal_campaigns"]
        self.cycles = database["mfal_cycles"]
        self.neb_paths = database["mfal_neb_paths"]
        self.force_responses = database["mfal_force_responses"]
        self.model_files = gridfs.GridFS(database, collection="mfal_model_files")
        self.ensure_indexes()

    @classmethod
    def from_target(cls, target) -> "Store":
        """A store on the database of a :class:`mfal.connection.DbTarget`."""
        return cls(target.database())

    @retry_when_unreachable("creating indexes")
    def ensure_indexes(self) -> None:
        self.labels.create_index(
            [("structure_hash", ASCENDING), ("settings_hash", ASCENDING)], unique=True, name="label_identity"
        )
        self.labels.create_index([("campaign", ASCENDING)], name="label_campaign")
        self.cycles.create_index([("campaign", ASCENDING), ("cycle", ASCENDING)], unique=True, name="cycle_identity")
        self.neb_paths.create_index(
            [("campaign", ASCENDING), ("cycle", ASCENDING)], unique=True, name="neb_path_identity"
        )
        self.models.create_index([("parent", ASCENDING)], name="model_parent")

    # -- structures ----------------------------------------------------------
    @retry_when_unreachable("storing a structure")
    def put_structure(self, atoms, **meta) -> str:
        """Store a structure under its content hash; return the hash."""
        key = structure_hash(atoms)
        record = {
            "numbers": [int(z) for z in atoms.get_atomic_numbers()],
            "positions": np.asarray(atoms.get_positions(), dtype=float).tolist(),
            "cell": np.asarray(atoms.get_cell(), dtype=float).tolist(),
            "pbc": [bool(p) for p in atoms.get_pbc()],
            "formula": atoms.get_chemical_formula(),
            "natoms": len(atoms),
            "created_at": utcnow(),
            **meta,
        }
        self.structures.update_one({"_id": key}, {"$setOnInsert": record}, upsert=True)
        return key

    @retry_when_unreachable("looking up a structure")
    def has_structure(self, key: str) -> bool:
        return self.structures.count_documents({"_id": key}, limit=1) > 0

    @retry_when_unreachable("reading a structure")
    def get_structure(self, key: str):
        from ase import Atoms

        record = self.structures.find_one({"_id": key})
        if record is None:
            raise StoreError(f"no structure with hash {key} in the store")
        return Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"])

    # -- labels --------------------------------------------------------------
    @retry_when_unreachable("storing a label")
    def put_label(self, doc: dict) -> ObjectId:
        """Insert a label once; a second write of the same identity returns the first id.

        ``doc`` needs ``structure_hash``, ``settings`` (dict), ``energy`` and ``error``
        in eV, ``fidelity`` and ``method``. A missing error bar (``None``) is stored
        as 0 with ``error_note`` saying so.
        """
        record = self._validated_label(doc)
        identity = {"structure_hash": record["structure_hash"], "settings_hash": record["settings_hash"]}
        try:
            result = self.labels.update_one(identity, {"$setOnInsert": record}, upsert=True)
        except DuplicateKeyError:
            result = None  # a concurrent writer inserted it first
        if result is not None and result.upserted_id is not None:
            return result.upserted_id
        return self.labels.find_one(identity, {"_id": 1})["_id"]

    @retry_when_unreachable("looking up a label")
    def find_label(self, structure_key: str, settings_key: str) -> dict | None:
        return self.labels.find_one({"structure_hash": structure_key, "settings_hash": settings_key})

    @retry_when_unreachable("reading labels")
    def get_labels(self, ids) -> list[dict]:
        """Labels by id (ObjectId or its string), in the order given; unknown ids are an error."""
        object_ids = [_object_id(i) for i in ids]
        found = {doc["_id"]: doc for doc in self.labels.find({"_id": {"$in": object_ids}})}
        missing = [str(i) for i in object_ids if i not in found]
        if missing:
            raise StoreError(f"unknown label id(s): {', '.join(missing)}")
        return [found[i] for i in object_ids]

    def _validated_label(self, doc: dict) -> dict:
        missing = [key for key in LABEL_REQUIRED_FIELDS if key not in doc]
        if missing:
            raise StoreError(f"label is missing field(s) {missing}; required: {list(LABEL_REQUIRED_FIELDS)}")
        if not isinstance(doc["settings"], dict):
            raise StoreError(f"label settings must be a dict, got {type(doc['settings']).__name__}")
        energy = _finite_float(doc["energy"], "label energy")
        record = dict(doc)
        if doc["error"] is None:
            record["error"] = 0.0
            record["error_note"] = "no error bar reported by the method; stored as 0"
        else:
            record["error"] = _finite_float(doc["error"], "label error bar")
            if record["error"] < 0:
                raise StoreError(f"label error bar must be >= 0, got {record['error']}")
        if not self.has_structure(doc["structure_hash"]):
            raise StoreError(f"label refers to structure {doc['structure_hash']}, which is not in the store")
        record["energy"] = energy
        record["settings_hash"] = settings_hash(doc["settings"])
        if doc.get("settings_hash") not in (None, record["settings_hash"]):
            raise StoreError("label settings_hash does not match the hash of its settings")
        record.setdefault("units", "eV")
        record["created_at"] = utcnow()
        return record

    # -- models --------------------------------------------------------------
    @retry_when_unreachable("storing a model")
    def put_model(
        self,
        key: str,
        payload: bytes,
        architecture: dict,
        *,
        parent: str | None = None,
        label_ids=(),
        metrics: dict | None = None,
        **extra,
    ) -> str:
        """Store model weights (opaque bytes) and their record under ``key``; idempotent."""
        digest = hashlib.sha256(payload).hexdigest()
        existing = self.models.find_one({"_id": key}, {"payload_sha256": 1})
        if existing is not None:
            if existing["payload_sha256"] != digest:
                raise StoreError(f"model {key!r} already exists with different weights; models are immutable")
            return key
        if parent is not None and self.models.count_documents({"_id": parent}, limit=1) == 0:
            raise StoreError(f"parent model {parent!r} of {key!r} is not in the store")
        file_id = self.model_files.put(payload, filename=key)
        record = {
            "_id": key,
            "architecture": architecture,
            "parent": parent,
            "label_ids": [str(i) for i in label_ids],
            "metrics": metrics or {},
            "payload_id": file_id,
            "payload_sha256": digest,
            "payload_bytes": len(payload),
            "created_at": utcnow(),
            **extra,
        }
        try:
            self.models.insert_one(record)
        except DuplicateKeyError:
            self.model_files.delete(file_id)
            return self.put_model(key, payload, architecture, parent=parent, label_ids=label_ids, metrics=metrics, **extra)
        return key

    @retry_when_unreachable("reading a model")
    def get_model(self, key: str) -> tuple[dict, bytes]:
        """The model record and its payload bytes (checked against the stored sha256)."""
        record = self.models.find_one({"_id": key})
        if record is None:
            raise StoreError(f"no model {key!r} in the store")
        payload = self.model_files.get(record["payload_id"]).read()
        if hashlib.sha256(payload).hexdigest() != record["payload_sha256"]:
            raise StoreError(f"model {key!r}: stored weights do not match their checksum")
        return record, payload

    @retry_when_unreachable("looking up a model")
    def has_model(self, key: str) -> bool:
        return self.models.count_documents({"_id": key}, limit=1) > 0

    # -- force responses of base members on refit anchors ---------------------
    @retry_when_unreachable("storing a force response")
    def put_force_response(self, key: str, forces: np.ndarray, design: np.ndarray) -> None:
        """Keep one anchor's forces (3A,) and force design (3A, P) as float64 bytes; idempotent."""
        forces, design = np.asarray(forces, dtype="<f8"), np.asarray(design, dtype="<f8")
        if design.ndim != 2 or forces.shape != (design.shape[0],):
            raise StoreError(f"force response {key!r}: forces {forces.shape} do not match design {design.shape}")
        record = {
            "_id": key,
            "rows": int(design.shape[0]),
            "columns": int(design.shape[1]),
            "forces": Binary(forces.tobytes()),
            "design": Binary(design.tobytes()),
            "created_at": utcnow(),
        }
        try:
            self.force_responses.insert_one(record)
        except DuplicateKeyError:
            pass

    @retry_when_unreachable("reading force responses")
    def get_force_responses(self, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(forces, design) of each key that is stored; keys not stored are left out."""
        found = {}
        for record in self.force_responses.find({"_id": {"$in": list(keys)}}):
            rows, columns = record["rows"], record["columns"]
            forces = np.frombuffer(record["forces"], dtype="<f8")
            design = np.frombuffer(record["design"], dtype="<f8")
            if forces.size != rows or design.size != rows * columns:
                raise StoreError(f"force response {record['_id']!r} is truncated: {forces.size} forces and "
                                 f"{design.size} design values for {rows} x {columns}")
            found[record["_id"]] = (forces, design.reshape(rows, columns))
        return found

    # -- campaigns, cycles, NEB paths ----------------------------------------
    @retry_when_unreachable("registering a campaign")
    def put_campaign(self, name: str, config: dict, state: str = "READY") -> bool:
        """Register a campaign; True if created, False if it existed with the same config."""
        now = utcnow()
        result = self.campaigns.update_one(
            {"_id": name},
            {"$setOnInsert": {"config": config, "state": state, "created_at": now, "updated_at": now}},
            upsert=True,
        )
        if result.upserted_id is not None:
            return True
        if self.campaigns.find_one({"_id": name})["config"] != config:
            raise StoreError(f"campaign {name!r} already exists with a different config; choose another name")
        return False

    @retry_when_unreachable("reading a campaign")
    def get_campaign(self, name: str) -> dict:
        record = self.campaigns.find_one({"_id": name})
        if record is None:
            known = sorted(self.campaigns.distinct("_id"))
            hint = f"known campaigns: {', '.join(known)}" if known else "the database holds no campaigns"
            raise StoreError(f"unknown campaign {name!r}; {hint}")
        return record

    @retry_when_unreachable("updating a campaign")
    def set_campaign_state(self, name: str, state: str, **fields) -> None:
        self.get_campaign(name)
        self.campaigns.update_one({"_id": name}, {"$set": {"state": state, "updated_at": utcnow(), **fields}})

    @retry_when_unreachable("listing campaigns")
    def list_campaigns(self) -> list[dict]:
        return list(self.campaigns.find({}, {"config": 0}).sort("created_at", ASCENDING))

    @retry_when_unreachable("updating a cycle")
    def put_cycle(self, campaign: str, cycle: int, **fields) -> None:
        """Create or update one cycle's record; only the given fields change."""
        self.cycles.update_one(
            {"campaign": campaign, "cycle": int(cycle)},
            {"$set": {**fields, "updated_at": utcnow()}, "$setOnInsert": {"created_at": utcnow()}},
            upsert=True,
        )

    @retry_when_unreachable("reading a cycle")
    def get_cycle(self, campaign: str, cycle: int) -> dict | None:
        return self.cycles.find_one({"campaign": campaign, "cycle": int(cycle)})

    @retry_when_unreachable("reading cycles")
    def get_cycles(self, campaign: str) -> list[dict]:
        return list(self.cycles.find({"campaign": campaign}).sort("cycle", ASCENDING))

    @retry_when_unreachable("storing a NEB path")
    def put_neb_path(self, campaign: str, cycle: int, path: dict) -> None:
        """Store the NEB path of a cycle (image energies mean/std, barrier, max force...)."""
        record = {**path, "campaign": campaign, "cycle": int(cycle), "updated_at": utcnow()}
        self.neb_paths.replace_one({"campaign": campaign, "cycle": int(cycle)}, record, upsert=True)

    @retry_when_unreachable("reading a NEB path")
    def get_neb_path(self, campaign: str, cycle: int) -> dict | None:
        return self.neb_paths.find_one({"campaign": campaign, "cycle": int(cycle)})

    @retry_when_unreachable("reading a history")
    def history(self, campaign: str) -> list[dict]:
        """Per cycle: barrier, its committee spread, QMC labels used so far, wall time, state."""
        self.get_campaign(campaign)
        rows, labels_so_far = [], set()
        for record in self.get_cycles(campaign):
            labels_so_far.update(str(i) for i in record.get("label_ids", []))
            started, finished = record.get("started_at"), record.get("finished_at")
            wall = (finished - started).total_seconds() if started and finished else record.get("wall_time_s")
            rows.append(
                {
                    "cycle": record["cycle"],
                    "state": record.get("state", "UNKNOWN"),
                    "barrier": record.get("barrier"),
                    "barrier_spread": record.get("barrier_spread"),
                    "n_labels": len(labels_so_far),
                    "wall_time_s": wall,
                }
            )
        return rows


def _finite_float(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StoreError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise StoreError(f"{what} must be finite, got {number}")
    return number


def _object_id(value) -> ObjectId:
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(str(value))
    except InvalidId:
        raise StoreError(f"{value!r} is not a valid label id") from None
