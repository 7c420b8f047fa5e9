"""The steps of a campaign cycle, on the provenance store, without FireWorks.

Each step loads what it needs from the store, calls a science function, writes
its provenance back and returns a small JSON-able summary. Every step is
idempotent: it first looks for its own result in the store and returns it when
present, so a step rerun after a crash neither repeats expensive work nor
duplicates a record. The FireTasks in :mod:`mfal.tasks` are thin wrappers around
these functions, and the benchmarks call them in a plain loop.

Cycle ``c`` of a campaign: ``explore`` (NEB with the committee of cycle c: the
base committee for c = 0, the c-th refit after), ``converge`` (decide on the
barrier history), ``select`` (pick images), ``label`` (one QMC label per pick),
``refit`` (the committee of cycle c + 1 from all labels so far).
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from ase import Atoms

from mfal.config import CampaignConfig, check_paths_expanded, config_from_dict, shipped_committee_path, shipped_dataset_path
from mfal.convergence import decide
from mfal.errors import MfalError
from mfal.hashing import settings_hash
from mfal.paths import mfal_home
from mfal.select import select_images
from mfal.store import Store, utcnow


#: Errors of a file system that refuses writes: full, over quota, read-only, not permitted.
UNWRITABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class CampaignStateError(MfalError):
    """A step was asked to run before the step it depends on has left its result."""


@dataclass
class Campaign:
    """A campaign's config and store, with the derived names every step agrees on."""

    store: Store
    config: CampaignConfig

    @classmethod
    def load(cls, store: Store, name: str) -> "Campaign":
        record = store.get_campaign(name)
        return cls(store, config_from_dict(record["config"], source=f"campaign {name!r}"))

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def label_settings(self) -> dict:
        """The QMC settings that define a label's identity (their hash keys the label)."""
        return self.config.qmc.label_key()

    @cached_property
    def label_settings_hash(self) -> str:
        return settings_hash(self.label_settings)

    def model_key(self, cycle: int) -> str:
        """Store key of the committee that explores cycle ``cycle``."""
        return f"{self.name}/base" if cycle == 0 else f"{self.name}/refit-{cycle:03d}"

    def qmc_job_dir(self, structure_hash: str) -> Path:
        root = self.config.fireworks.qmc_work_dir or mfal_home() / "qmc_jobs"
        return Path(root) / self.label_settings_hash[:16] / structure_hash[:24]


# -- registration ------------------------------------------------------------------
def register(store: Store, config: CampaignConfig) -> Campaign:
    """Check the campaign completely, then put it and its base committee into the store.

    Every check runs before the first write: no unset environment variable left
    in a path, the reaction's endpoints, the base committee's files and
    elements, the refit's anchor structures, and the QMC backend's inputs (a
    deck is written for the initial state into a scratch folder, which for
    QMCPACK checks the pseudopotential files). Registering the same config again changes nothing.
    """
    from mfal.potentials import check_elements
    from mfal.qmc import backend_for

    check_paths_expanded(config)
    campaign = Campaign(store, config)
    initial, final = endpoints(config)
    committee = load_base_committee(config)
    check_elements([initial, final, *training_anchors(config)], committee.atomic_numbers)
    with tempfile.TemporaryDirectory(prefix="mfal_check_") as scratch:
        backend_for(config.qmc, {}).prepare(initial, Path(scratch) / "job")
    created = store.put_campaign(config.name, config.to_document(), state="READY")
    base_key = campaign.model_key(0)
    if not store.has_model(base_key):
        committee.to_store(store, base_key, metrics={"source": _committee_source(config)}, role="base")
    if created:
        store.set_campaign_state(config.name, "RUNNING")
    return campaign


def load_base_committee(config: CampaignConfig):
    from mfal.potentials import Committee

    section = config.committee
    options = {"dtype": section.dtype, "device": section.device}
    if section.shipped is not None:
        return Committee.load(shipped_committee_path(section.shipped), **options)
    if len(section.files) == 1 and section.files[0].suffix != ".model":
        return Committee.load(section.files[0], **options)
    return Committee.from_mace_model_files(section.files, **options)


def _committee_source(config: CampaignConfig) -> str:
    section = config.committee
    return f"shipped:{section.shipped}" if section.shipped else ",".join(str(p) for p in section.files)


def endpoints(config: CampaignConfig) -> tuple[Atoms, Atoms]:
    """Initial and final structures of the campaign's reaction."""
    system = config.system
    if system.kind == "h3":
        from mfal.systems import h3_endpoints

        return h3_endpoints(system.far_distance)
    if system.kind == "mos2":
        from mfal.systems import mos2_divacancy_endpoints, mos2_vacancy_endpoints

        build = mos2_vacancy_endpoints if system.variant == "single" else mos2_divacancy_endpoints
        return build(tuple(system.size), vacuum=system.vacuum)
    from mfal.structures import read_endpoints

    return read_endpoints(system.initial, system.final)


# -- exploration -------------------------------------------------------------------
def load_committee(campaign: Campaign, cycle: int):
    from mfal.potentials import Committee

    section = campaign.config.committee
    return Committee.from_store(campaign.store, campaign.model_key(cycle), dtype=section.dtype, device=section.device)


def explore(campaign: Campaign, cycle: int) -> dict:
    """Climbing-image NEB with the committee of ``cycle``; stores the path and the barrier."""
    from mfal.neb import neb_from_endpoints

    store = campaign.store
    model_key = campaign.model_key(cycle)
    existing = store.get_neb_path(campaign.name, cycle)
    if existing is not None and existing.get("model_key") == model_key:
        recorded = store.get_cycle(campaign.name, cycle)
        if recorded is None or recorded.get("barrier") is None:  # the path was stored, the cycle not yet
            _record_explored_cycle(campaign, cycle, existing)
        return {"barrier": existing["barrier"], "barrier_spread": existing["barrier_spread"], "reused": True}
    started = utcnow()
    committee = load_committee(campaign, cycle)
    initial, final = endpoints(campaign.config)
    settings = campaign.config.neb
    result = neb_from_endpoints(
        committee, initial, final,
        n_intermediate=settings.n_images, relax=settings.relax_endpoints, endpoint_fmax=settings.endpoint_fmax,
        endpoint_max_steps=settings.max_steps, fmax=settings.fmax, max_steps=settings.max_steps,
        optimizer=settings.optimizer, spring_constant=settings.spring,
    )
    image_hashes = [
        store.put_structure(image, origin="neb_image", campaign=campaign.name, cycle=cycle, image=index)
        for index, image in enumerate(result.images)
    ]
    path = {**result.summary(), "model_key": model_key, "image_hashes": image_hashes,
            "member_energies": result.member_energies.T.tolist()}
    store.put_neb_path(campaign.name, cycle, path)
    _record_explored_cycle(campaign, cycle, path, started_at=started)
    return {"barrier": result.barrier, "barrier_spread": result.barrier_spread, "reused": False}


def _record_explored_cycle(campaign: Campaign, cycle: int, path: dict, **fields) -> None:
    """The cycle's barrier from its stored NEB path, with the labels its committee was refit on."""
    model_record, _ = campaign.store.get_model(path["model_key"])
    campaign.store.put_cycle(campaign.name, cycle, state="EXPLORED", barrier=path["barrier"],
                             barrier_spread=path["barrier_spread"], model_key=path["model_key"],
                             label_ids=model_record.get("label_ids", []), neb_converged=path["converged"], **fields)


# -- refit -------------------------------------------------------------------------
def refit(campaign: Campaign, cycle: int) -> dict:
    """The committee of cycle ``cycle + 1``: the base committee refit on every label so far.

    Anchors for the force constraint are the DFT training structures and the
    NEB images of this cycle.
    """
    from mfal.potentials.refit_store import refit_from_store

    store = campaign.store
    key = campaign.model_key(cycle + 1)
    if not store.has_model(key):
        path = store.get_neb_path(campaign.name, cycle)
        if path is None:
            raise CampaignStateError(f"campaign {campaign.name!r}: cycle {cycle} has no NEB path to refit around")
        label_ids = campaign_label_ids(campaign, cycle)
        anchors = training_anchors(campaign.config) + [store.get_structure(h) for h in path["image_hashes"]]
        section = campaign.config.committee
        refit_from_store(store, campaign.model_key(0), label_ids, anchors, campaign.config.refit, key=key,
                         dtype=section.dtype, device=section.device)
    record, _ = store.get_model(key)
    store.put_cycle(campaign.name, cycle, state="COMPLETED", refit_model=key, refit_label_ids=record["label_ids"],
                    finished_at=utcnow())
    return {"model_key": key, "n_labels": len(record["label_ids"])}


def training_anchors(config: CampaignConfig) -> list[Atoms]:
    """A seeded subset (``committee.max_anchors``) of the base committee's DFT training structures."""
    from mfal.structures import read_structures

    section = config.committee
    source = section.anchors or (shipped_dataset_path(section.shipped) if section.shipped else None)
    if source is None or section.max_anchors == 0:
        return []
    structures = read_structures(source)
    rng = np.random.default_rng(config.seed)
    keep = sorted(rng.choice(len(structures), size=min(section.max_anchors, len(structures)), replace=False))
    return [structures[i] for i in keep]


# -- convergence -------------------------------------------------------------------
def converge(campaign: Campaign, cycle: int) -> dict:
    """Decide after cycle ``cycle``'s NEB; record the final result when the loop ends."""
    rows = campaign.store.history(campaign.name)
    explored = [row for row in rows if row["barrier"] is not None and row["cycle"] <= cycle]
    if len(explored) != cycle + 1:
        raise CampaignStateError(f"campaign {campaign.name!r}: converge for cycle {cycle} needs the NEB of every "
                                 f"cycle up to it; found {len(explored)}")
    rules = campaign.config.convergence
    decision = decide(
        [row["barrier"] for row in explored],
        [row["barrier_spread"] for row in explored],
        explored[-1]["n_labels"],
        tol_energy=rules.tol_energy,
        n_consecutive=rules.n_consecutive,
        tol_spread=rules.tol_spread,
        max_cycles=rules.max_cycles,
        max_labels=rules.max_labels,
        batch_size=campaign.config.acquisition.batch_size,
    )
    summary = {"cycle": cycle, "finished": decision.finished, "converged": decision.converged,
               "reason": decision.reason}
    if decision.finished:
        final = explored[-1]
        result = {"barrier": final["barrier"], "barrier_spread": final["barrier_spread"],
                  "n_labels": final["n_labels"], "cycle": cycle, "model_key": campaign.model_key(cycle),
                  "converged": decision.converged, "reason": decision.reason,
                  "base_barrier": explored[0]["barrier"]}
        campaign.store.put_cycle(campaign.name, cycle, state="COMPLETED", finished_at=utcnow())
        campaign.store.set_campaign_state(campaign.name, "CONVERGED" if decision.converged else "STOPPED",
                                          final=result)
        summary["final"] = result
    return summary


# -- selection ---------------------------------------------------------------------
def select(campaign: Campaign, cycle: int) -> list[str]:
    """Pick the structures of cycle ``cycle`` to label; the same answer when rerun.

    Path images that already hold a label with these QMC settings (made by
    another campaign, or by this one for a structure it meets again) cost
    nothing: those the campaign has not used yet are selected on top of the
    ``batch_size`` new picks, so the refit uses them, and their label
    fireworks only look the label up.
    """
    store = campaign.store
    record = store.get_cycle(campaign.name, cycle)
    if record and record.get("selected") is not None:
        return list(record["selected"])
    path = store.get_neb_path(campaign.name, cycle)
    if path is None:
        raise CampaignStateError(f"campaign {campaign.name!r}: cycle {cycle} has no NEB path to select from")
    hashes = path["image_hashes"]
    labelled = [store.find_label(h, campaign.label_settings_hash) is not None for h in hashes]
    used = {h for earlier in store.get_cycles(campaign.name) if earlier["cycle"] < cycle
            for h in earlier.get("selected") or []}
    free = [i for i, h in enumerate(hashes) if labelled[i] and h not in used and h not in hashes[:i]]
    acquisition = campaign.config.acquisition
    positions = [np.asarray(store.get_structure(h).get_positions()) for h in hashes]
    selection = select_images(
        np.asarray(path["member_energies"]),
        acquisition.batch_size,
        strategy=acquisition.strategy,
        labelled=labelled,
        saddle_index=path["saddle_index"],
        noise=acquisition.expected_error,
        prior_floor=acquisition.prior_floor,
        positions=positions,
        min_distance=acquisition.min_distance,
        seed=campaign.config.seed + cycle,
    )
    indices = free + list(selection.indices)
    selected = [hashes[i] for i in indices]
    store.put_cycle(campaign.name, cycle, selected=selected, selected_images=indices,
                    selection_scores=selection.scores, barrier_std_before=selection.barrier_std_before,
                    barrier_std_after=selection.barrier_std_after)
    return selected


# -- labelling ---------------------------------------------------------------------
def label(campaign: Campaign, structure_hash: str, worker_env: dict | None = None) -> str:
    """One QMC label for one structure: reused if stored, analysed if its job already finished."""
    from mfal.qmc import QmcJobFailed, backend_for

    store = campaign.store
    existing = store.find_label(structure_hash, campaign.label_settings_hash)
    if existing is not None:
        return str(existing["_id"])
    atoms = store.get_structure(structure_hash)
    backend = backend_for(campaign.config.qmc, worker_env or {})
    job = campaign.qmc_job_dir(structure_hash)
    started = time.monotonic()
    try:
        result = backend.analyse(job)  # a job that finished before a crash is never run again
        reused_output = True
    except (QmcJobFailed, FileNotFoundError):
        try:
            backend.prepare(atoms, job)
            backend.run(job)
        except OSError as exc:
            if exc.errno not in UNWRITABLE_ERRNOS:
                raise
            raise QmcJobFailed(job, f"cannot write the job directory ({exc.strerror}: {exc.filename}); free space "
                                    "or fix permissions there, then rerun with 'mfal campaign resume'") from exc
        result = backend.analyse(job)
        reused_output = False
    label_id = store.put_label(
        {
            "structure_hash": structure_hash,
            "settings": campaign.label_settings,
            "energy": result.energy_eV,
            "error": result.error_eV,
            "fidelity": "surrogate" if campaign.config.qmc.backend == "surrogate" else "qmc",
            "method": result.method,
            "backend": campaign.config.qmc.backend,
            "diagnostics": result.diagnostics,
            "campaign": campaign.name,
            "job_dir": str(job),
            "reused_job_output": reused_output,
            "host": socket.gethostname(),
            "user": _user(),
            "wall_time_s": time.monotonic() - started,
            "code_versions": _code_versions(campaign.config.qmc.backend),
        }
    )
    return str(label_id)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _code_versions(backend: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    packages = {"qmcpack": ["mfal"], "pyqmc": ["mfal", "pyqmc", "pyscf"], "surrogate": ["mfal", "ase"]}[backend]
    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def campaign_label_ids(campaign: Campaign, up_to_cycle: int) -> list[str]:
    """Ids of the labels of every structure selected in cycles 0..``up_to_cycle``, in selection order."""
    ids = []
    for record in campaign.store.get_cycles(campaign.name):
        if record["cycle"] > up_to_cycle:
            continue
        for structure_hash in record.get("selected") or []:
            found = campaign.store.find_label(structure_hash, campaign.label_settings_hash)
            if found is None:
                raise CampaignStateError(f"campaign {campaign.name!r}: structure {structure_hash[:12]} selected in "
                                         f"cycle {record['cycle']} has no label yet; run its label firework first")
            if str(found["_id"]) not in ids:
                ids.append(str(found["_id"]))
    return ids
