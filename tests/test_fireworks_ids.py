"""FireWorks' id counters stay unique when several processes take ids at once (mfal.fireworks_ids)."""

import multiprocessing
from collections import Counter

from fireworks import LaunchPad

from mfal.connection import target_from_launchpad_file
from mfal.fireworks_ids import use_race_free_ids

PROCESSES = 4
IDS_EACH = 100


def _take_ids(launchpad_file: str) -> tuple[list[int], list[int]]:
    """Launch ids and two-wide Firework id ranges, as rlaunch and lpad take them, in one process."""
    use_race_free_ids()
    launchpad = LaunchPad.from_file(launchpad_file)
    launch_ids = [launchpad.get_new_launch_id() for _ in range(IDS_EACH)]
    firework_ids = [launchpad.get_new_fw_id(quantity=2) for _ in range(IDS_EACH)]
    return launch_ids, firework_ids


def test_parallel_processes_never_share_an_id(launchpad_file):
    """Unpatched, 4 processes taking 800 ids from the embedded server got 613-615 distinct ones."""
    target_from_launchpad_file(launchpad_file, source="test").launchpad()  # initialises the counters
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.map(_take_ids, [str(launchpad_file)] * PROCESSES)
    launch_ids = [i for launches, _ in results for i in launches]
    firework_ids = [i for _, ranges in results for first in ranges for i in (first, first + 1)]
    assert sorted(launch_ids) == list(range(1, PROCESSES * IDS_EACH + 1)), Counter(launch_ids).most_common(3)
    assert sorted(firework_ids) == list(range(1, 2 * PROCESSES * IDS_EACH + 1)), Counter(firework_ids).most_common(3)


def test_ids_continue_the_counter_as_fireworks_reads_it(launchpad_file):
    """The first id is the counter's value before the update, as with FireWorks' own methods."""
    launchpad = target_from_launchpad_file(launchpad_file, source="test").launchpad()
    launchpad.fw_id_assigner.update_one({}, {"$set": {"next_fw_id": 41, "next_launch_id": 7}})
    assert launchpad.get_new_fw_id(quantity=3) == 41
    assert launchpad.get_new_fw_id() == 44
    assert launchpad.get_new_launch_id() == 7
    assert launchpad.fw_id_assigner.find_one({}, {"_id": 0}) == {"next_fw_id": 45, "next_launch_id": 8}
