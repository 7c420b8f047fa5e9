"""Base training: labels reach the loss, members differ, metrics and the train-base command."""

import json

import numpy as np
import pytest
import torch
import typer
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from typer.testing import CliRunner

from mfal.errors import MfalError
from mfal.potentials import Committee, PotentialError, TrainingDataError, default_architecture
from mfal.potentials.analytic import leps_h3_dataset
from mfal.potentials.cli import train_base
from mfal.potentials.train import (
    FORCES_WEIGHT_KEY, MemberProgress, TrainingSettings, attach_labels, error_metrics, fit_constants, labelled_graphs,
    split_indices, train_committee, train_member, training_data_hash,
)

torch.set_num_threads(1)

TINY = dict(r_max=3.0, channels=4, max_ell=1, num_bessel=4, radial_MLP=(8,), correlation=2)


def as_calculator_results(structures):
    """The same structures with labels held by a calculator, as ase.io.read returns an extxyz."""
    result = []
    for atoms in structures:
        copy = atoms.copy()
        energy, forces = copy.info.pop("REF_energy"), copy.arrays.pop("REF_forces")
        copy.calc = SinglePointCalculator(copy, energy=energy, forces=forces)
        result.append(copy)
    return result


def test_labels_are_taken_from_calculator_results_and_reach_the_graphs():
    data = leps_h3_dataset(4, seed=3)
    labelled = attach_labels(as_calculator_results(data))
    architecture = default_architecture([1], [0.0], 1.0, **TINY)
    graphs = labelled_graphs(labelled, architecture)
    for graph, atoms in zip(graphs, data):
        # mace's default empty KeySpecification would leave these at zero
        assert float(graph["energy"]) == pytest.approx(atoms.info["REF_energy"], abs=1e-12)
        np.testing.assert_allclose(graph["forces"].numpy(), atoms.arrays["REF_forces"], atol=1e-12)
        assert float(graph["energy_weight"]) == 1.0 and float(graph["forces_weight"]) == 1.0


def test_structures_without_labels_are_named():
    data = leps_h3_dataset(3, seed=1)
    del data[2].info["REF_energy"]
    with pytest.raises(TrainingDataError, match=r"structure 2 \(H3\) has no energy"):
        attach_labels(data)
    data = leps_h3_dataset(3, seed=1)
    del data[1].arrays["REF_forces"]
    with pytest.raises(TrainingDataError, match="structure 1 .* no forces"):
        attach_labels(data)


def test_bad_settings_are_refused():
    with pytest.raises(PotentialError, match="valid_fraction must lie in"):
        TrainingSettings(valid_fraction=0.7)
    with pytest.raises(PotentialError, match="dtype must be one of"):
        TrainingSettings(dtype="float16")
    with pytest.raises(PotentialError, match="at least 4 members, got 2"):
        train_committee(leps_h3_dataset(10), 2)


def test_members_differ_and_metrics_are_on_held_out_data():
    data = leps_h3_dataset(24, seed=2)
    committee, metrics = train_committee(
        data, 4, settings=TrainingSettings(max_epochs=3, batch_size=8), architecture_options=TINY
    )
    assert len(committee) == 4
    assert metrics["splits"] == {"test": 2, "valid": 2, "train": 20}
    assert metrics["test"]["n_structures"] == 2
    for split in ("test", "train"):
        assert np.isfinite(metrics[split]["energy_rmse_mev_per_atom"])
        assert np.isfinite(metrics[split]["force_rmse_mev_per_a"])
    assert [run["seed"] for run in metrics["members"]] == [0, 1, 2, 3]
    # bootstrap resamples: members see different subsets of the 20 training structures
    assert len({run["distinct_training_structures"] for run in metrics["members"]}) > 1
    assert all(run["distinct_training_structures"] < 20 for run in metrics["members"])
    # the energy shift is re-fitted per member: no member is off by a constant
    assert max(metrics["train"]["member_energy_rmse_mev_per_atom"]) < 1000
    json.dumps(metrics)
    prediction = committee.evaluate(data[:3])
    assert np.all(prediction.energy_spread > 0)


def test_an_interrupted_training_resumes_from_its_member_checkpoints(tmp_path, monkeypatch):
    import mfal.potentials.train as train

    data = leps_h3_dataset(24, seed=2)
    options = dict(settings=TrainingSettings(max_epochs=2, batch_size=8), architecture_options=TINY,
                   checkpoint_dir=tmp_path)
    first, _ = train_committee(data, 4, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member_{i:02d}.pt" for i in range(4)]
    (tmp_path / "member_03.pt").unlink()  # as if the run had stopped during the last member
    trained = []
    real_train_member = train.train_member
    monkeypatch.setattr(train, "train_member", lambda *a, **k: trained.append(a[4]) or real_train_member(*a, **k))
    again, _ = train_committee(data, 4, **options)
    assert trained == [3]
    np.testing.assert_array_equal(first.evaluate(data[:3]).energies, again.evaluate(data[:3]).energies)
    # Other data: the checkpoints are not this training's, every member is trained afresh.
    trained.clear()
    train_committee(leps_h3_dataset(24, seed=3), 4, **options)
    assert trained == [0, 1, 2, 3]


def test_a_member_cut_off_mid_training_resumes_from_its_progress_file_to_the_same_weights(tmp_path, monkeypatch):
    import mfal.potentials.train as train

    data = leps_h3_dataset(24, seed=5)
    architecture = default_architecture([1], [0.0], 1.0, **TINY)
    record = {**architecture, **fit_constants(data, [1], architecture["r_max"], "REF_energy", "REF_forces")}
    graphs = labelled_graphs(data, record)
    settings = TrainingSettings(max_epochs=5, patience=50, batch_size=8)
    whole, whole_run = train_member(record, graphs[:18], graphs[18:], settings, seed=1)

    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # save after every epoch
    # In a folder that does not exist yet, as on a fresh machine's first training.
    saved = MemberProgress(tmp_path / "checkpoints" / "member_01.progress.pt", "this member")
    real_save = MemberProgress.save

    def cut_off_after_two_epochs(self, state):
        real_save(self, state)
        if state["next_epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(MemberProgress, "save", cut_off_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train_member(record, graphs[:18], graphs[18:], settings, seed=1, saved_progress=saved)
    monkeypatch.setattr(MemberProgress, "save", real_save)
    resumed, resumed_run = train_member(record, graphs[:18], graphs[18:], settings, seed=1, saved_progress=saved)
    for name, tensor in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    assert (resumed_run["epochs"], resumed_run["best_epoch"]) == (whole_run["epochs"], whole_run["best_epoch"])
    # A progress file of another member (or other data) is not resumed from.
    assert MemberProgress(saved.path, "another member").load() is None


def test_energy_only_labels_train_and_measure_no_forces():
    """A structure with force weight 0 (its forces far off, as in a squeezed MoS2 frame) neither pulls
    the loss towards its forces nor enters the force RMSE; its energy still counts."""
    data = leps_h3_dataset(24, seed=6)
    committee, _ = train_committee(data, 4, settings=TrainingSettings(max_epochs=1, batch_size=8), architecture_options=TINY)
    squeezed = data[0].copy()
    squeezed.arrays["REF_forces"] = squeezed.arrays["REF_forces"] + 1000.0
    squeezed.info[FORCES_WEIGHT_KEY] = 0.0
    assert labelled_graphs([squeezed], committee.architectures[0])[0].forces_weight == 0
    plain = error_metrics(committee, data[1:6], "REF_energy", "REF_forces")
    mixed = error_metrics(committee, [squeezed, *data[1:6]], "REF_energy", "REF_forces")
    assert (mixed["n_energy_only"], plain["n_energy_only"]) == (1, 0)
    assert mixed["force_rmse_mev_per_a"] == pytest.approx(plain["force_rmse_mev_per_a"], rel=1e-12)
    assert mixed["energy_rmse_mev_per_atom"] != pytest.approx(plain["energy_rmse_mev_per_atom"], rel=1e-6)
    # A member trained with the forces counted is not one trained on the energy alone.
    assert training_data_hash([squeezed], "REF_energy", "REF_forces") != \
        training_data_hash([_with_forces_of(squeezed)], "REF_energy", "REF_forces")


def _with_forces_of(atoms):
    """The same structure and labels at the default force weight."""
    copy = atoms.copy()
    del copy.info[FORCES_WEIGHT_KEY]
    return copy


def test_members_trained_in_parallel_processes_equal_those_trained_one_by_one(tmp_path):
    # 100 structures: sent to the workers as tensors, their graphs would need a file descriptor per tensor
    data = leps_h3_dataset(100, seed=4)
    options = dict(settings=TrainingSettings(max_epochs=1, batch_size=16), architecture_options=TINY)
    serial, serial_metrics = train_committee(data, 4, **options)
    parallel, parallel_metrics = train_committee(data, 4, jobs=2, checkpoint_dir=tmp_path, **options)
    np.testing.assert_allclose(parallel.evaluate(data[:3]).energies, serial.evaluate(data[:3]).energies, rtol=1e-9)
    def untimed(runs):
        return [{key: value for key, value in run.items() if key != "seconds"} for run in runs]

    assert untimed(parallel_metrics["members"]) == untimed(serial_metrics["members"])
    assert all(run["seconds"] > 0 for run in parallel_metrics["members"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"member_{i:02d}.pt" for i in range(4)]
    with pytest.raises(PotentialError, match="jobs must be at least 1"):
        train_committee(data, 4, jobs=0, **options)


def test_a_warm_start_trains_on_from_the_initial_members_and_its_checkpoints_name_them(tmp_path, monkeypatch):
    import mfal.potentials.train as train

    two = dict(min_members=2, architecture_options=TINY)
    initial, _ = train_committee(leps_h3_dataset(16, seed=2), 2, settings=TrainingSettings(max_epochs=2, batch_size=8), **two)
    other_start, _ = train_committee(leps_h3_dataset(16, seed=3), 2, settings=TrainingSettings(max_epochs=1, batch_size=8), **two)
    more_data = leps_h3_dataset(20, seed=5)  # other structures: other E0s and neighbour count if refitted
    # A learning rate this small leaves the weights where they started: only the recentred energy shift moves,
    # which leaves forces alone.
    still = dict(settings=TrainingSettings(max_epochs=1, batch_size=8, learning_rate=1e-14), min_members=2)
    warm, _ = train_committee(more_data, 2, initial=initial, checkpoint_dir=tmp_path, **still)
    assert warm.architecture["avg_num_neighbors"] == initial.architecture["avg_num_neighbors"]
    np.testing.assert_allclose(warm.evaluate(more_data[:3]).forces, initial.evaluate(more_data[:3]).forces, atol=1e-9)
    fresh, _ = train_committee(more_data, 2, architecture_options=TINY, **still)
    assert np.abs(fresh.evaluate(more_data[:3]).forces - initial.evaluate(more_data[:3]).forces).max() > 1e-3

    trained = []
    real_train_member = train.train_member
    monkeypatch.setattr(train, "train_member", lambda *a, **k: trained.append(a[4]) or real_train_member(*a, **k))
    train_committee(more_data, 2, initial=initial, checkpoint_dir=tmp_path, **still)
    assert trained == []  # the same start: every member restored
    train_committee(more_data, 2, initial=other_start, checkpoint_dir=tmp_path, **still)
    assert trained == [0, 1]  # another start: neither checkpoint is this training's
    with pytest.raises(PotentialError, match="keeps the initial committee's architecture"):
        train_committee(more_data, 2, initial=initial, architecture_options=TINY, **still)


def test_train_base_command_writes_committee_and_metrics(tmp_path):
    path = tmp_path / "h3.extxyz"
    write(path, as_calculator_results(leps_h3_dataset(12, seed=4)))
    app = typer.Typer()
    app.callback()(lambda: None)  # a command group, as in the mfal command
    app.command("train-base")(train_base)
    output = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["train-base", str(path), "--committee", "4", "--output", str(output), "--r-max", "3.0",
         "--channels", "4", "--max-epochs", "2", "--export-mace"],
    )
    assert result.exit_code == 0, result.output
    assert "energy RMSE" in result.output
    committee = Committee.load(output / "committee.pt")
    assert len(committee) == 4 and committee.r_max == 3.0
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"energy_rmse_mev_per_atom", "force_rmse_mev_per_a"}
    assert len(list((output / "mace_models").glob("*.model"))) == 4

    missing = CliRunner().invoke(app, ["train-base", str(tmp_path / "nope.extxyz")])
    assert isinstance(missing.exception, MfalError)
    assert "does not exist" in str(missing.exception)

    warm_output = tmp_path / "warm"
    warm = CliRunner().invoke(app, ["train-base", str(path), "--output", str(warm_output), "--max-epochs", "1",
                                    "--warm-start", str(output / "committee.pt")])
    assert warm.exit_code == 0, warm.output
    assert Committee.load(warm_output / "committee.pt").r_max == 3.0  # the initial committee's, not the default 5 Å
    assert json.loads((warm_output / "metrics.json").read_text())["warm_start"] == str(output / "committee.pt")
    no_start = CliRunner().invoke(app, ["train-base", str(path), "--warm-start", str(tmp_path / "none.pt")])
    assert "warm-start committee file" in str(no_start.exception)


def test_train_base_command_keeps_splits_and_widens_the_next_round(tmp_path):
    """The round after labelling new data: the grown data keep their test and validation structures,
    and the warm start may be widened and trained without bootstrap resamples."""
    frames = as_calculator_results(leps_h3_dataset(15, seed=5))
    for k, atoms in enumerate(frames):
        atoms.info["config_id"] = f"frame_{k:02d}"
    first_data, grown_data = tmp_path / "first.extxyz", tmp_path / "grown.extxyz"
    write(first_data, frames[:12])
    write(grown_data, frames)
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("train-base")(train_base)
    first = tmp_path / "first"
    result = CliRunner().invoke(app, ["train-base", str(first_data), "--output", str(first), "--r-max", "3.0",
                                      "--channels", "4", "--max-epochs", "1"])
    assert result.exit_code == 0, result.output
    first_splits = json.loads((first / "splits.json").read_text())
    assert len(first_splits["test"]) == len(first_splits["valid"]) == 1

    second = tmp_path / "second"
    result = CliRunner().invoke(app, ["train-base", str(grown_data), "--output", str(second), "--max-epochs", "1",
                                      "--warm-start", str(first / "committee.pt"), "--widen", "--no-bootstrap",
                                      "--keep-splits", str(first / "splits.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((second / "splits.json").read_text()) == first_splits
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["splits"] == {"test": 1, "valid": 1, "train": 13}  # the 3 new structures train
    assert metrics["widened"] and not metrics["settings"]["bootstrap"]
    assert all(member["distinct_training_structures"] == 13 for member in metrics["members"])
    widened = Committee.load(second / "committee.pt")
    assert widened.architecture["hidden_irreps"].startswith("8x0e")

    for bad, message in ((["--widen"], "--widen widens the --warm-start committee"),
                         (["--keep-splits", str(tmp_path / "none.json")], "splits file")):
        refused = CliRunner().invoke(app, ["train-base", str(grown_data), *bad])
        assert message in str(refused.exception)
    unnamed = tmp_path / "unnamed.extxyz"
    write(unnamed, as_calculator_results(leps_h3_dataset(12, seed=6)))
    refused = CliRunner().invoke(app, ["train-base", str(unnamed), "--keep-splits", str(first / "splits.json")])
    assert "some structures in" in str(refused.exception) and "have none" in str(refused.exception)


def test_kept_splits_stay_put_while_the_dataset_grows():
    first = split_indices(50, 0.1, 0.1, seed=0)
    grown = split_indices(57, 0.1, 0.1, seed=0, kept={"test": first["test"], "valid": first["valid"]})
    np.testing.assert_array_equal(grown["test"], first["test"])
    np.testing.assert_array_equal(grown["valid"], first["valid"])
    np.testing.assert_array_equal(grown["train"], np.concatenate([first["train"], np.arange(50, 57)]))
    assert set(split_indices(57, 0.1, 0.1, seed=0)["test"]) != set(first["test"])  # what a redraw would do
    with pytest.raises(TrainingDataError, match="indices of the 57 structures"):
        split_indices(57, 0.1, 0.1, seed=0, kept={"test": [3, 57], "valid": [4]})
    with pytest.raises(TrainingDataError, match=r"\[4\] are in both"):
        split_indices(57, 0.1, 0.1, seed=0, kept={"test": [3, 4], "valid": [4]})
