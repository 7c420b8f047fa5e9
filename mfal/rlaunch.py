"""``mfal-rlaunch``: FireWorks' ``rlaunch``, with race-free Firework and Launch ids.

It takes the same arguments (``mfal-rlaunch -l my_launchpad.yaml rapidfire``)
and runs the same code; only the id counters are read as
:mod:`mfal.fireworks_ids` explains. Plain ``rlaunch`` gets the same fix from
its first mfal firework on, but its first checkout can still collide with
another worker's on the embedded server: start parallel workers there with
``mfal-rlaunch``. On MongoDB both are the same.
"""

from __future__ import annotations

import sys

from mfal.fireworks_ids import use_race_free_ids


def main() -> int:
    use_race_free_ids()
    from fireworks.scripts.rlaunch_run import rlaunch

    sys.argv[0] = "rlaunch"  # its usage and log lines name the command users know
    return rlaunch()


if __name__ == "__main__":
    sys.exit(main())
