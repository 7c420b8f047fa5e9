"""FireTasks of a campaign: thin adapters from FireWorks to :mod:`mfal.steps`.

Each task reads its campaign from the store on the worker's own LaunchPad
database (``_add_launchpad_and_fw_id``), so no connection details or
credentials ever travel in a spec, calls one step, and returns an FWAction.
Specs carry names, cycle numbers and structure hashes only; models and data
live in the store.
"""

from __future__ import annotations

from fireworks import FiretaskBase, FWAction, explicit_serialize

from mfal import steps
from mfal.config import config_from_dict
from mfal.fireworks_ids import use_race_free_ids
from mfal.store import Store

use_race_free_ids()  # a plain ``rlaunch`` that runs mfal fireworks takes its next ids race-free


def _store(task: FiretaskBase) -> Store:
    return Store(task.launchpad.db)


def _campaign(task: FiretaskBase) -> steps.Campaign:
    return steps.Campaign.load(_store(task), task["campaign"])


@explicit_serialize
class RegisterCampaignTask(FiretaskBase):
    """Validate the campaign config and put it and its base committee into the store."""

    required_params = ["config"]

    def run_task(self, fw_spec):
        config = config_from_dict(self["config"], source="campaign config in the workflow")
        steps.register(_store(self), config)
        return FWAction()


@explicit_serialize
class ExploreTask(FiretaskBase):
    """Climbing-image NEB with the committee of this cycle."""

    required_params = ["campaign", "cycle"]

    def run_task(self, fw_spec):
        summary = steps.explore(_campaign(self), int(self["cycle"]))
        return FWAction(stored_data={"barrier": summary["barrier"], "barrier_spread": summary["barrier_spread"]})


@explicit_serialize
class ConvergeTask(FiretaskBase):
    """Decide on the barrier history; if not finished, add this cycle's selection."""

    required_params = ["campaign", "cycle"]

    def run_task(self, fw_spec):
        from mfal.campaign import select_firework

        campaign = _campaign(self)
        cycle = int(self["cycle"])
        decision = steps.converge(campaign, cycle)
        if decision["finished"]:
            return FWAction(stored_data=decision)
        return FWAction(stored_data=decision, additions=[select_firework(campaign.config, cycle)])


@explicit_serialize
class SelectTask(FiretaskBase):
    """Pick the structures to label, then add their label fireworks, the refit and the next cycle."""

    required_params = ["campaign", "cycle"]

    def run_task(self, fw_spec):
        from mfal.campaign import cycle_remainder

        campaign = _campaign(self)
        cycle = int(self["cycle"])
        selected = steps.select(campaign, cycle)
        return FWAction(stored_data={"selected": selected}, additions=cycle_remainder(campaign.config, cycle, selected))


@explicit_serialize
class LabelTask(FiretaskBase):
    """One QMC label; the worker's ``env`` (my_fworker.yaml) names the QMC commands."""

    required_params = ["campaign", "structure_hash"]

    def run_task(self, fw_spec):
        label_id = steps.label(_campaign(self), self["structure_hash"], fw_spec.get("_fw_env") or {})
        return FWAction(stored_data={"label_id": label_id})


@explicit_serialize
class RefitTask(FiretaskBase):
    """Readout refit of the committee on every label so far: the next cycle's committee."""

    required_params = ["campaign", "cycle"]

    def run_task(self, fw_spec):
        summary = steps.refit(_campaign(self), int(self["cycle"]))
        return FWAction(stored_data=summary)
