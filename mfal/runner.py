"""``mfal campaign run``: a campaign driven to its end by a local ``rlaunch rapidfire``.

The worker is the real FireWorks ``rlaunch`` command in a subprocess, exactly
what a cluster node runs; this process only watches the store and the
LaunchPad and shows where the campaign stands (cycle, step, barrier so far,
QMC labels used).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml
from rich.console import Console
from rich.live import Live
from rich.text import Text

from mfal.campaign import add_campaign
from mfal.config import CampaignConfig
from mfal.connection import resolve_target
from mfal.errors import MfalError
from mfal.paths import mfal_home
from mfal.store import Store

FINISHED_STATES = ("CONVERGED", "STOPPED")
POLL_SECONDS = 1.0


class CampaignRunError(MfalError):
    """The local worker stopped before the campaign finished."""


@dataclass(frozen=True)
class RunSummary:
    name: str
    state: str
    final: dict
    reference: tuple[str, float] | None

    def final_line(self) -> str:
        result = self.final
        line = (f"final barrier: {result['barrier']:.3f} ± {result['barrier_spread']:.3f} eV "
                f"(starting committee: {result['base_barrier']:.3f} eV")
        if self.reference:
            line += f"; {self.reference[0]}: {self.reference[1]:.3f} eV"
        return line + f"; {result['n_labels']} QMC labels; {self.state.lower()}: {result['reason']})"


def reference_barrier(config: CampaignConfig) -> tuple[str, float] | None:
    """A literature value to print beside the result, where the system has one."""
    if config.system.kind == "h3":
        from mfal.systems import H3_EXACT_BARRIER_EV

        return "exact", H3_EXACT_BARRIER_EV
    return None


def run_campaign_locally(config: CampaignConfig, launchpad_file: Path | None, console: Console) -> RunSummary:
    target = resolve_target(launchpad_file)
    store = Store.from_target(target)
    launchpad = target.launchpad()
    if not store.campaigns.count_documents({"_id": config.name}, limit=1):
        add_campaign(launchpad, store, config)
        console.print(f"added campaign {config.name!r} to {target.describe()}")
    elif store.get_campaign(config.name)["state"] not in FINISHED_STATES:
        console.print(f"campaign {config.name!r} exists and is unfinished: running its remaining fireworks")
    if store.get_campaign(config.name)["state"] not in FINISHED_STATES:
        _run_worker(config, target, launchpad, store, console)
    record = store.get_campaign(config.name)
    if record["state"] not in FINISHED_STATES:
        fizzled = launchpad.fireworks.count_documents({"spec.mfal_campaign": config.name, "state": "FIZZLED"})
        raise CampaignRunError(
            f"campaign {config.name!r} stopped in state {record['state']} with {fizzled} failed firework(s); "
            f"inspect them with 'lpad get_fws -s FIZZLED -d more' and rerun them with 'lpad rerun_fws -s FIZZLED'"
        )
    return RunSummary(config.name, record["state"], record["final"], reference_barrier(config))


def _run_worker(config, target, launchpad, store, console) -> None:
    work_dir = mfal_home() / "launches" / config.name
    work_dir.mkdir(parents=True, exist_ok=True)
    rlaunch = shutil.which("rlaunch", path=str(Path(sys.executable).parent)) or shutil.which("rlaunch")
    if rlaunch is None:
        raise CampaignRunError("the FireWorks 'rlaunch' command is not installed beside mfal")
    with worker_launchpad_file(target) as launchpad_path, open(work_dir / "rlaunch.log", "ab") as log:
        process = subprocess.Popen([rlaunch, "-l", str(launchpad_path), "rapidfire"], cwd=work_dir,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with Live(Text("starting worker..."), console=console, refresh_per_second=2, transient=False) as live:
            while process.poll() is None:
                live.update(_progress(config.name, store, launchpad))
                time.sleep(POLL_SECONDS)
            live.update(_progress(config.name, store, launchpad))
    if process.returncode != 0:
        raise CampaignRunError(f"rlaunch exited with status {process.returncode}; see {work_dir / 'rlaunch.log'}")


@contextlib.contextmanager
def worker_launchpad_file(target) -> Iterator[Path]:
    """The launchpad file for the worker: the user's own, or a private temporary one (mode 0600)."""
    if target.launchpad_path is not None:
        yield target.launchpad_path
        return
    handle, name = tempfile.mkstemp(prefix="mfal_launchpad_", suffix=".yaml", dir=mfal_home())
    try:
        with os.fdopen(handle, "w") as stream:
            yaml.safe_dump(target.launchpad_dict(), stream)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _progress(name: str, store: Store, launchpad) -> Text:
    rows = store.history(name)
    barriers = [row for row in rows if row["barrier"] is not None]
    running = launchpad.fireworks.find_one({"spec.mfal_campaign": name, "state": "RUNNING"}, {"spec": 1})
    step = f"{running['spec'].get('mfal_step')} (cycle {running['spec'].get('mfal_cycle')})" if running else "waiting"
    barrier = (f"{barriers[-1]['barrier']:.3f} ± {barriers[-1]['barrier_spread']:.3f} eV"
               if barriers else "not yet")
    labels = store.labels.count_documents({"campaign": name})
    return Text(f"campaign {name}: cycle {rows[-1]['cycle'] if rows else 0} | step {step} | "
                f"barrier {barrier} | QMC labels {labels}")
