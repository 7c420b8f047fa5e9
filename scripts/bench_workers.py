"""Benchmark: parallel rlaunch workers on one campaign; integrity check and throughput.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_workers.py CONFIG --workers 4 [-l my_launchpad.yaml] [--json]

Adds the campaign in CONFIG (which must not exist yet) and runs it to the end
with ``mfal campaign run --workers N`` (N real ``rlaunch rapidfire`` processes),
then reads the LaunchPad and the store back and reports:

- integrity: fireworks not COMPLETED (lost or failed), fireworks with more than
  one launch (run twice), labels stored more than once per structure and
  settings, selected structures without a label, label fireworks per structure,
  launch ids whose launch document is missing or names another firework (two
  checkouts handed the same launch id, see ``mfal/fireworks_ids.py``);
- throughput: labels per second over the label phase of each cycle (first label
  started to last label finished) and fireworks per second over the whole
  campaign, and the most label fireworks seen running at once.

Use a surrogate campaign with a large ``acquisition.batch_size`` to measure the
orchestration itself (QMC jobs of milliseconds); with a real QMC backend the
numbers are those of the QMC code. Exits non-zero when the integrity check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from rich.console import Console

from mfal.config import load_config
from mfal.connection import resolve_target
from mfal.runner import run_campaign_locally
from mfal.store import Store


def _time(stamp) -> float:
    value = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    return value.timestamp()


def launch_intervals(launchpad, name: str) -> list[dict]:
    """(step, cycle, start, end) of every launch of the campaign's fireworks, archived ones included."""
    fireworks = {fw["fw_id"]: fw for fw in launchpad.fireworks.find({"spec.mfal_campaign": name})}
    intervals = []
    for launch in launchpad.launches.find({"fw_id": {"$in": list(fireworks)}}):
        history = {entry["state"]: entry for entry in launch["state_history"]}
        spec = fireworks[launch["fw_id"]]["spec"]
        end = history.get("COMPLETED") or history.get("FIZZLED")
        intervals.append({"step": spec["mfal_step"], "cycle": spec["mfal_cycle"],
                          "start": _time(history["RUNNING"]["created_on"]),
                          "end": _time(end["created_on"]) if end else None})
    return intervals


def integrity(store: Store, launchpad, name: str) -> dict:
    """Counts of everything that must be zero after a clean campaign."""
    fireworks = list(launchpad.fireworks.find({"spec.mfal_campaign": name}))
    selected = [h for cycle in store.get_cycles(name) for h in cycle.get("selected") or []]
    labels = Counter((doc["structure_hash"], doc["settings_hash"])
                     for doc in store.labels.find({"campaign": name}, {"structure_hash": 1, "settings_hash": 1}))
    labelled = {structure for structure, _ in labels}
    label_fireworks = Counter(fw["spec"]["mfal_structure"] for fw in fireworks if fw["spec"]["mfal_step"] == "label")
    launches = {fw["fw_id"]: fw.get("launches", []) + fw.get("archived_launches", []) for fw in fireworks}
    launch_owners = {launch["launch_id"]: launch["fw_id"] for launch in launchpad.launches.find(
        {"launch_id": {"$in": [i for ids in launches.values() for i in ids]}}, {"launch_id": 1, "fw_id": 1})}
    return {
        "fireworks_not_completed": sum(fw["state"] != "COMPLETED" for fw in fireworks),
        "fireworks_run_twice": sum(len(ids) > 1 for ids in launches.values()),
        "duplicated_labels": sum(count - 1 for count in labels.values()),
        "selected_without_label": len(set(selected) - labelled),
        "structures_selected_twice": len(selected) - len(set(selected)),
        "label_fireworks_per_structure_above_one": sum(count > 1 for count in label_fireworks.values()),
        "launches_missing_or_shared": sum(launch_owners.get(i) != fw_id for fw_id, ids in launches.items() for i in ids),
    }


def step_times(intervals: list[dict]) -> dict:
    """Total seconds spent in each step kind (launch start to end), to see where the time goes."""
    totals = Counter()
    for interval in intervals:
        if interval["end"] is not None:
            totals[interval["step"]] += interval["end"] - interval["start"]
    return {step: round(seconds, 3) for step, seconds in sorted(totals.items())}


def throughput(intervals: list[dict]) -> dict:
    labels = [i for i in intervals if i["step"] == "label" and i["end"] is not None]
    label_seconds = 0.0
    for cycle in {i["cycle"] for i in labels}:
        batch = [i for i in labels if i["cycle"] == cycle]
        label_seconds += max(i["end"] for i in batch) - min(i["start"] for i in batch)
    finished = [i for i in intervals if i["end"] is not None]
    span = max(i["end"] for i in finished) - min(i["start"] for i in finished)
    events = sorted([(i["start"], 1) for i in labels] + [(i["end"], -1) for i in labels])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return {
        "labels": len(labels),
        "label_phase_s": round(label_seconds, 3),
        "labels_per_s": round(len(labels) / label_seconds, 3) if label_seconds > 0 else None,
        "fireworks": len(finished),
        "campaign_s": round(span, 3),
        "fireworks_per_s": round(len(finished) / span, 3) if span > 0 else None,
        "most_labels_running_at_once": most,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="campaign config (YAML); the campaign must be new")
    parser.add_argument("-l", "--launchpad", type=Path, default=None, help="launchpad file (default: as mfal)")
    parser.add_argument("--workers", type=int, default=4, help="parallel rlaunch workers (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    target = resolve_target(args.launchpad)
    store = Store.from_target(target)
    if store.campaigns.count_documents({"_id": config.name}, limit=1):
        parser.error(f"campaign {config.name!r} already exists; the benchmark needs a new one")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # library chatter; stdout is for the report
        summary = run_campaign_locally(config, args.launchpad, Console(stderr=True), workers=args.workers)
        wall = time.monotonic() - started
        launchpad = target.launchpad()
        intervals = launch_intervals(launchpad, config.name)
        report = {"campaign": config.name, "workers": args.workers, "state": summary.state,
                  "wall_time_s": round(wall, 3), "integrity": integrity(store, launchpad, config.name),
                  "throughput": throughput(intervals), "steps_s": step_times(intervals)}
    clean = not any(report["integrity"].values())
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        rate = report["throughput"]
        print(f"campaign {config.name}: {summary.state.lower()} with {args.workers} workers in {wall:.1f} s")
        print(f"labels: {rate['labels']} in {rate['label_phase_s']:.2f} s of label phase = "
              f"{rate['labels_per_s']} labels/s; at most {rate['most_labels_running_at_once']} running at once")
        print(f"fireworks: {rate['fireworks']} in {rate['campaign_s']:.2f} s = {rate['fireworks_per_s']} fireworks/s")
        print("seconds per step kind: " + ", ".join(f"{step} {s:.2f}" for step, s in report["steps_s"].items()))
        counts = ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in report["integrity"].items())
        print(f"integrity {'clean' if clean else 'FAILED'} ({counts})")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
