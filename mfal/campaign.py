"""Campaign workflows: the first cycle for ``lpad add``, and how each cycle grows the next.

The workflow starts as two fireworks: register + explore (cycle 0), then
converge. Each later piece is added by the firework before it, because what it
holds depends on results: converge adds the selection when the loop goes on;
selection adds one QMC label firework per picked structure (category
``fireworks.qmc_category``, so they run in parallel on QMC nodes), the refit
that waits for all of them, and the next cycle's explore and converge.
"""

from __future__ import annotations

from fireworks import Firework, Workflow

from mfal.config import CampaignConfig
from mfal.errors import ConfigError
from mfal.tasks import (
    ConvergeTask,
    ExploreTask,
    LabelTask,
    RefitTask,
    RegisterCampaignTask,
    SelectTask,
)

#: Every mfal task reads the store on its worker's LaunchPad database.
BASE_SPEC = {"_add_launchpad_and_fw_id": True}


def _spec(config: CampaignConfig, step: str, cycle: int, category: str | None) -> dict:
    spec = {**BASE_SPEC, "mfal_campaign": config.name, "mfal_step": step, "mfal_cycle": cycle}
    if category:
        spec["_category"] = category
    return spec


def _ml_firework(config: CampaignConfig, tasks, step: str, cycle: int, parents=None, fw_id=None) -> Firework:
    return Firework(tasks, spec=_spec(config, step, cycle, config.fireworks.ml_category),
                    name=f"{config.name} c{cycle} {step}", parents=parents, fw_id=fw_id)


def initial_workflow(config: CampaignConfig, config_document: dict | None = None) -> Workflow:
    """The workflow ``mfal campaign add`` submits (and ``workflows/*.yaml`` hold).

    ``config_document`` is the config as the register task receives it: by
    default the validated config; the workflow files hold the config file's own
    mapping instead, so that ``$VARS`` in paths are expanded on the worker.
    """
    document = config_document if config_document is not None else config.to_document()
    explore = _ml_firework(config, [RegisterCampaignTask(config=document), ExploreTask(campaign=config.name, cycle=0)],
                           "explore", 0, fw_id=-1)
    converge = _ml_firework(config, [ConvergeTask(campaign=config.name, cycle=0)], "converge", 0, parents=[explore],
                            fw_id=-2)
    return Workflow([explore, converge], name=f"mfal campaign {config.name}", metadata={"mfal_campaign": config.name})


def workflow_file_document(config: CampaignConfig, config_document: dict) -> dict:
    """The initial workflow as ``lpad add`` reads it from a file, without creation times."""
    record = initial_workflow(config, config_document).to_dict()
    for entry in [record, *record["fws"]]:
        entry.pop("created_on", None)
        entry.pop("updated_on", None)
    return record


def select_firework(config: CampaignConfig, cycle: int) -> Firework:
    return _ml_firework(config, [SelectTask(campaign=config.name, cycle=cycle)], "select", cycle)


def cycle_remainder(config: CampaignConfig, cycle: int, selected: list[str]) -> Workflow:
    """Labels of the picks -> refit -> explore and converge of the next cycle."""
    labels = [
        Firework(LabelTask(campaign=config.name, structure_hash=structure_hash),
                 spec={**_spec(config, "label", cycle, config.fireworks.qmc_category), "mfal_structure": structure_hash},
                 name=f"{config.name} c{cycle} label {structure_hash[:10]}")
        for structure_hash in selected
    ]
    refit = _ml_firework(config, [RefitTask(campaign=config.name, cycle=cycle)], "refit", cycle, parents=labels or None)
    explore = _ml_firework(config, [ExploreTask(campaign=config.name, cycle=cycle + 1)], "explore", cycle + 1,
                           parents=[refit])
    converge = _ml_firework(config, [ConvergeTask(campaign=config.name, cycle=cycle + 1)], "converge", cycle + 1,
                            parents=[explore])
    return Workflow([*labels, refit, explore, converge], name=f"mfal campaign {config.name} cycle {cycle}")


def add_campaign(launchpad, store, config: CampaignConfig) -> int:
    """Validate, register and submit a new campaign; returns the first firework id.

    Registration happens here, before the LaunchPad sees anything, so a bad
    system, committee or pseudopotential directory is reported at once.
    """
    from mfal.steps import register

    if store.campaigns.count_documents({"_id": config.name}, limit=1):
        state = store.get_campaign(config.name).get("state")
        raise ConfigError(f"campaign {config.name!r} already exists (state {state}); "
                          "resume it with 'mfal campaign resume' or give the config another name")
    register(store, config)
    ids = launchpad.add_wf(initial_workflow(config))
    return min(ids.values())
