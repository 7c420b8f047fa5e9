"""``mfal campaign resume``: put an interrupted campaign's workflow back into a runnable state.

A worker that dies (node failure, SIGKILL, wall-time limit) leaves its firework
RUNNING on the LaunchPad for ever; a step that raised leaves it FIZZLED. Resume
finds the campaign's workflow, asks FireWorks which RUNNING fireworks have not
pinged within the expiration (``detect_lostruns``), and reruns those and the
FIZZLED ones of this campaign only. COMPLETED fireworks are never touched. The
steps themselves are idempotent (a label already stored, or a QMC job whose
output is complete, is reused), so a rerun repeats no finished QMC work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fireworks.fw_config import RUN_EXPIRATION_SECS

from mfal.errors import MfalError

#: Default expiration: FireWorks' own (four missed pings of a running worker).
DEFAULT_EXPIRATION_S = RUN_EXPIRATION_SECS


class ResumeError(MfalError):
    """The campaign cannot be resumed as asked (no workflow, bad expiration)."""


@dataclass
class ResumeReport:
    """What resume found and did, firework ids by kind."""

    campaign: str
    lost: list[dict] = field(default_factory=list)
    fizzled: list[dict] = field(default_factory=list)
    running: list[dict] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)

    @property
    def rerun(self) -> list[dict]:
        return self.lost + self.fizzled

    def lines(self, expiration_s: float) -> list[str]:
        """Human-readable summary, one line per kind of firework."""
        lines = []
        if self.lost:
            lines.append(f"rerun {len(self.lost)} lost firework(s) (no ping for {expiration_s:g} s): "
                         f"{_by_step(self.lost)}")
        if self.fizzled:
            lines.append(f"rerun {len(self.fizzled)} fizzled firework(s): {_by_step(self.fizzled)}")
        if self.refreshed:
            lines.append(f"refreshed {len(self.refreshed)} firework(s) whose launch had finished: "
                         f"ids {', '.join(map(str, self.refreshed))}")
        for fw in self.running:
            lines.append(f"firework {fw['fw_id']} ({_step(fw)}) is RUNNING, last heard from "
                         f"{fw['silent_s']:.0f} s ago: not lost yet (lower --expiration if its worker is gone)")
        if not lines:
            lines.append("nothing to rerun: no lost or fizzled fireworks")
        return lines


def resume_campaign(launchpad, store, name: str, expiration_s: float = DEFAULT_EXPIRATION_S) -> ResumeReport:
    """Rerun the lost and FIZZLED fireworks of campaign ``name``; return what was done.

    Raises :class:`~mfal.errors.StoreError` (listing the known campaigns) for an
    unknown name, :class:`ResumeError` when the LaunchPad holds no workflow for it.
    """
    if expiration_s < 0:
        raise ResumeError(f"--expiration must be >= 0 seconds; got {expiration_s}")
    store.get_campaign(name)
    workflow = launchpad.workflows.find_one({"metadata.mfal_campaign": name}, {"nodes": 1})
    if workflow is None:
        raise ResumeError(f"campaign {name!r} is in the store but has no workflow on this LaunchPad; "
                          "add it with 'mfal campaign add' or 'lpad add workflows/...'")
    query = {"fw_id": {"$in": workflow["nodes"]}}
    _, lost_ids, inconsistent_ids = launchpad.detect_lostruns(
        expiration_secs=expiration_s, query=query, rerun=True, refresh=True)
    report = ResumeReport(name, refreshed=sorted(inconsistent_ids))
    projection = {"fw_id": 1, "state": 1, "spec.mfal_step": 1, "spec.mfal_cycle": 1}
    report.lost = list(launchpad.fireworks.find({"fw_id": {"$in": lost_ids}}, projection))
    for fw in list(launchpad.fireworks.find({**query, "state": "FIZZLED"}, projection)):
        launchpad.rerun_fw(fw["fw_id"])
        report.fizzled.append(fw)
    now = datetime.now(timezone.utc)
    for fw in launchpad.fireworks.find({**query, "state": "RUNNING"}, projection):
        report.running.append({**fw, "silent_s": _silence(launchpad, fw["fw_id"], now)})
    return report


def _silence(launchpad, fw_id: int, now: datetime) -> float:
    """Seconds since the RUNNING launch of ``fw_id`` last pinged (or started)."""
    launch = launchpad.launches.find_one({"fw_id": fw_id, "state": "RUNNING"}, {"state_history": 1})
    stamps = [entry.get("updated_on") for entry in (launch or {}).get("state_history", [])
              if entry.get("state") == "RUNNING" and entry.get("updated_on")]
    if not stamps:
        return 0.0
    last = max(datetime.fromisoformat(s) if isinstance(s, str) else s for s in stamps)
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    return max(0.0, (now - last).total_seconds())


def _step(fw: dict) -> str:
    spec = fw.get("spec", {})
    return f"{spec.get('mfal_step', '?')} c{spec.get('mfal_cycle', '?')}"


def _by_step(fireworks: list[dict]) -> str:
    counts = Counter(_step(fw) for fw in fireworks)
    return ", ".join(f"{step} x{count}" for step, count in sorted(counts.items()))


__all__ = ["DEFAULT_EXPIRATION_S", "ResumeError", "ResumeReport", "resume_campaign"]
