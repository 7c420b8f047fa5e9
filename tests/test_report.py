"""Campaign reports from the database alone: figures, HTML page, text history chart, clear errors."""

import base64
import re

import pytest

from mfal import steps
from mfal.config import config_from_dict
from mfal.errors import MfalError, StoreError
from mfal.report_cli import history_plot
from tests.campaign_helpers import tiny_h3_committee, tiny_h3_document
from tests.test_campaign_steps import run_loop
from tests.test_cli import assert_one_line_error, run_mfal

FIGURE_STEMS = ("profiles", "barrier", "parity", "forces")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def inlined_images(page: str) -> dict[str, bytes]:
    found = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    return {stem: base64.b64decode(data) for stem, data in found}


@pytest.mark.slow
def test_report_of_a_stored_campaign(store, tmp_path, monkeypatch):
    from mfal.report import collect, write_report

    monkeypatch.setenv("MFAL_HOME", str(tmp_path / "home"))
    committee_file = tiny_h3_committee(tmp_path / "h3.pt")
    campaign = steps.register(store, config_from_dict(tiny_h3_document("report-h3", committee_file)))

    # One explored cycle, nothing labelled yet: the report already builds.
    steps.explore(campaign, 0)
    early = collect(store, "report-h3")
    assert [view.cycle for view in early.cycles] == [0] and early.refits == []
    page = write_report(store, "report-h3", tmp_path / "early").read_text()
    assert set(inlined_images(page)) == set(FIGURE_STEMS)

    last = run_loop(campaign)
    out = tmp_path / "report"
    page_path = write_report(store, "report-h3", out)
    assert page_path == out / "report.html"
    page = page_path.read_text()
    images = inlined_images(page)
    assert list(images) == list(FIGURE_STEMS)
    for stem in FIGURE_STEMS:
        png = (out / f"{stem}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and images[stem] == png
    rows = re.findall(r"<tr><td>(\d+)</td>", page)
    assert rows == [str(cycle) for cycle in range(last + 1)]
    assert "exact, real system barrier 0.417 eV" in page and "converges to the surrogate&#x27;s own barrier" in page

    data = collect(store, "report-h3")
    n_labels = store.labels.count_documents({"campaign": "report-h3"})
    assert sum(len(view.labels) for view in data.cycles) == n_labels > 0
    assert [refit.cycle for refit in data.refits] == list(range(last))
    assert all(view.reference_energy is not None for view in data.cycles)
    assert data.refits[-1].predictions.shape == (4, n_labels)
    assert data.reference == ("exact, real system", 0.417)

    chart = history_plot(store.history("report-h3")).splitlines()
    assert len(chart) == last + 2 and all("●" in line for line in chart[1:])


def test_campaign_without_a_finished_cycle_is_a_clear_error(store, tmp_path):
    from mfal.report import ReportError, write_report

    store.put_campaign("fresh", {"system": {"kind": "h3"}})
    with pytest.raises(ReportError, match="campaign 'fresh' has no finished cycle yet") as caught:
        write_report(store, "fresh", tmp_path / "out")
    assert isinstance(caught.value, MfalError) and "\n" not in str(caught.value)
    store.put_cycle("fresh", 0, state="EXPLORING")
    with pytest.raises(ReportError, match="no finished cycle"):
        write_report(store, "fresh", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(StoreError, match="unknown campaign 'missing'"):
        write_report(store, "missing", tmp_path / "out")


def test_report_command_without_a_finished_cycle_says_so_in_one_line(launchpad_file, mongo_client, database_name,
                                                                      tmp_path):
    from mfal.store import Store

    Store(mongo_client[database_name]).put_campaign("fresh", {"system": {"kind": "h3"}})
    result = run_mfal("report", "fresh", "--out", str(tmp_path / "out"), "-l", str(launchpad_file))
    assert_one_line_error(result, "campaign 'fresh' has no finished cycle yet")


def test_history_plot_places_barriers_and_spreads_on_one_axis():
    rows = [
        {"cycle": 0, "barrier": 0.60, "barrier_spread": 0.20, "n_labels": 0},
        {"cycle": 1, "barrier": 0.50, "barrier_spread": 0.10, "n_labels": 2},
        {"cycle": 2, "barrier": None, "barrier_spread": None, "n_labels": 4},
    ]
    header, first, second, third = history_plot(rows, width=21).splitlines()
    bar_start = len("    0       0  ") + 21 + 2
    assert header.endswith("0.400 eV".ljust(12) + "0.800 eV".rjust(9))
    assert first.startswith("    0       0  0.6000 ± 0.2000")
    assert first[bar_start:] == "├─────────●─────────┤"
    assert second[bar_start:] == "├────●────┤"
    assert third == "    2       4  not explored yet"
    assert history_plot([{"cycle": 0, "barrier": None, "n_labels": 0}]) == "no cycle has a barrier yet"
    flat = history_plot([{"cycle": 0, "barrier": 0.3, "barrier_spread": 0.0, "n_labels": 0}], width=21)
    assert flat.splitlines()[1][bar_start:] == " " * 10 + "●"
