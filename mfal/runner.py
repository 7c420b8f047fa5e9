"""``mfal campaign run``: a campaign driven to its end by local ``rlaunch rapidfire`` workers.

The workers are the real FireWorks ``rlaunch`` in subprocesses, exactly what a
cluster node runs, started as ``mfal-rlaunch`` so that workers checking out
fireworks at the same moment never share a launch id (:mod:`mfal.fireworks_ids`).
This process only watches the store and the LaunchPad and shows where the
campaign stands (cycle, step, barrier so far, QMC labels used).

Each worker's FireWorker carries a query for this campaign's fireworks only, so
a local run never picks up another campaign's work from a shared LaunchPad.
Workers poll (``rapidfire --nlaunches infinite``) because a cycle's labels
appear only when its selection has run: a worker that exited whenever nothing
was ready would leave the others alone for the next cycle. They are stopped
once the campaign has no firework ready, reserved or running.

Workers share the machine's cores: unless the user has set ``OMP_NUM_THREADS``,
each gets ``cores // workers`` threads for OpenMP, OpenBLAS and MKL. Left at
their defaults, every worker's BLAS and torch start a thread per core, and two
pyqmc workers on two cores ran each DMC label 4.4 times slower (440 s against
99 s) than with one thread each.
"""

from __future__ import annotations

import contextlib
import json
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
ACTIVE_STATES = ("READY", "RESERVED", "RUNNING")
POLL_SECONDS = 1.0
WORKER_SLEEP_SECONDS = 2


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


def run_campaign_locally(
    config: CampaignConfig, launchpad_file: Path | None, console: Console, workers: int = 1
) -> RunSummary:
    if workers < 1:
        raise CampaignRunError(f"workers must be at least 1, got {workers}")
    target = resolve_target(launchpad_file)
    store = Store.from_target(target)
    launchpad = target.launchpad()
    if not store.campaigns.count_documents({"_id": config.name}, limit=1):
        add_campaign(launchpad, store, config)
        console.print(f"added campaign {config.name!r} to {target.describe()}")
    elif store.get_campaign(config.name)["state"] not in FINISHED_STATES:
        console.print(f"campaign {config.name!r} exists and is unfinished: running its remaining fireworks")
    if store.get_campaign(config.name)["state"] not in FINISHED_STATES:
        _run_workers(config, target, launchpad, store, console, workers)
    record = store.get_campaign(config.name)
    if record["state"] not in FINISHED_STATES:
        fizzled = launchpad.fireworks.count_documents({"spec.mfal_campaign": config.name, "state": "FIZZLED"})
        raise CampaignRunError(
            f"campaign {config.name!r} stopped in state {record['state']} with {fizzled} failed firework(s); "
            f"inspect them with 'lpad get_fws -s FIZZLED -d more', fix the cause and rerun them with "
            f"'mfal campaign resume {config.name} --run'"
        )
    return RunSummary(config.name, record["state"], record["final"], reference_barrier(config))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(environ, workers: int, cores: int | None = None) -> dict[str, str]:
    """The environment of each of ``workers`` local workers: ``environ`` with the cores shared out.

    A user's own ``OMP_NUM_THREADS`` is kept as it is; otherwise every thread
    variable is set to ``cores // workers`` (at least 1), ``cores`` being the
    cores this process may run on.
    """
    environment = dict(environ)
    if "OMP_NUM_THREADS" in environment:
        return environment
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    threads = str(max(1, cores // workers))
    environment.update({name: threads for name in THREAD_VARIABLES})
    return environment

def _run_workers(config, target, launchpad, store, console, workers: int) -> None:
    work_dir = mfal_home() / "launches" / config.name
    rlaunch = shutil.which("mfal-rlaunch", path=str(Path(sys.executable).parent)) or shutil.which("mfal-rlaunch")
    if rlaunch is None:
        raise CampaignRunError("the 'mfal-rlaunch' command is not installed beside mfal; reinstall mfal")
    fworker_path = work_dir / "my_fworker.yaml"
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        fworker_path.write_text(yaml.safe_dump(campaign_fworker(config.name)))
        (work_dir / "rlaunch.log").open("ab").close()
    except OSError as exc:
        raise CampaignRunError(f"cannot write the launch directory {work_dir} ({exc.strerror}); free space or fix "
                               "permissions there, or set MFAL_HOME to another directory") from None
    command = [rlaunch, "-w", str(fworker_path), "rapidfire", "--nlaunches", "infinite",
               "--sleep", str(WORKER_SLEEP_SECONDS)]
    with contextlib.ExitStack() as stack:
        launchpad_path = stack.enter_context(worker_launchpad_file(target))
        log = stack.enter_context(open(work_dir / "rlaunch.log", "ab"))
        environment = worker_environment(os.environ, workers)
        processes = [subprocess.Popen([command[0], "-l", str(launchpad_path), *command[1:]], cwd=work_dir,
                                      env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                     for _ in range(workers)]
        stack.callback(_stop_workers, processes)
        with Live(Text("starting workers..."), console=console, refresh_per_second=2, transient=False) as live:
            idle_polls = 0
            while idle_polls < 2:
                time.sleep(POLL_SECONDS)
                live.update(_progress(config.name, store, launchpad))
                failed = [p.returncode for p in processes if p.poll() not in (None, 0)]
                if failed:
                    raise CampaignRunError(f"rlaunch exited with status {failed[0]}; see {work_dir / 'rlaunch.log'}")
                if all(p.poll() is not None for p in processes):
                    break
                active = launchpad.fireworks.count_documents(
                    {"spec.mfal_campaign": config.name, "state": {"$in": list(ACTIVE_STATES)}}, limit=1)
                idle_polls = 0 if active else idle_polls + 1


def campaign_fworker(name: str) -> dict:
    """A FireWorker document that takes this campaign's fireworks only, whatever their category."""
    return {"name": f"mfal-{name}", "category": "", "query": json.dumps({"spec.mfal_campaign": name})}


def _stop_workers(processes: list[subprocess.Popen]) -> None:
    """Terminate idle polling workers (SIGTERM, then SIGKILL after 10 s)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
