"""``mfal train-base``: train a base MACE committee on low-fidelity energies and forces.

Mounted in :mod:`mfal.cli` as a plain command function; torch and mace are
imported only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
import typer

from mfal.errors import MfalError


def train_base(
    data: Path = typer.Argument(..., help="Labelled structures (extxyz or any format ASE reads)."),
    committee: int = typer.Option(4, "--committee", "-n", help="Number of committee members (at least 4)."),
    output: Path = typer.Option(Path("base_committee"), "--output", "-o", help="Directory for the committee and metrics."),
    energy_key: str = typer.Option("REF_energy", help="atoms.info key of the energy (eV); falls back to the file's energy column."),
    forces_key: str = typer.Option("REF_forces", help="atoms.arrays key of the forces (eV/Å); falls back to the file's forces column."),
    r_max: float = typer.Option(5.0, help="Cutoff radius (Å)."),
    channels: int = typer.Option(16, help="Channels per irrep of the hidden features."),
    max_l: int = typer.Option(1, "--max-L", help="Highest rotation order of the hidden features."),
    num_interactions: int = typer.Option(2, help="Message-passing layers."),
    pair_repulsion: bool = typer.Option(False, "--pair-repulsion", help="Add ZBL repulsion at short distances (see default_architecture)."),
    max_epochs: int = typer.Option(300, help="Upper bound on epochs per member."),
    patience: int = typer.Option(30, help="Stop a member after this many epochs without validation improvement."),
    batch_size: int = typer.Option(8, help="Structures per optimisation step."),
    learning_rate: float = typer.Option(5e-3, help="Adam learning rate."),
    energy_weight: float = typer.Option(1.0, help="Weight of the per-atom energy term (eV/atom, squared)."),
    forces_weight: float = typer.Option(10.0, help="Weight of the force term against the per-atom energy term."),
    valid_fraction: float = typer.Option(0.1, help="Share of structures held out for early stopping."),
    test_fraction: float = typer.Option(0.1, help="Share of structures held out for the reported metrics."),
    seed: int = typer.Option(0, help="Seed of the split; member i uses seed + i."),
    dtype: str = typer.Option("float64", help="float64 or float32."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Members trained at once, each in its own single-threaded process."),
    export_mace: bool = typer.Option(False, "--export-mace", help="Also write each member as a mace .model file."),
    warm_start: Path | None = typer.Option(
        None, "--warm-start", help="An mfal committee file: member i trains on from its member i, keeping its "
        "architecture (the architecture options above then do not apply)."),
    widen: bool = typer.Option(
        False, "--widen", help="Double the warm-start members' channels first, keeping what they compute "
        "(mfal.potentials.widen): more capacity without starting from scratch."),
    bootstrap: bool = typer.Option(
        True, "--bootstrap/--no-bootstrap", help="Train each member on its own bootstrap resample of the training "
        "split, or all on the whole of it (members then differ by seed, or by the members they start from)."),
    keep_splits: Path | None = typer.Option(
        None, "--keep-splits", help="An earlier training's splits.json: its test and validation structures "
        "(by config_id) stay the test and validation splits, and structures added to the data since train."),
) -> None:
    """Train a committee of MACE models (seeds + bootstrap resamples) and write it with its metrics.

    Writes OUTPUT/committee.pt (load with mfal.potentials.Committee.load),
    OUTPUT/metrics.json (energy RMSE in meV/atom, force RMSE in meV/Å on the
    held-out test split) and, when every structure has a ``config_id``,
    OUTPUT/splits.json (the test and validation structures, for the next
    round's ``--keep-splits``).
    """
    import ase.io

    from mfal.potentials import Committee
    from mfal.potentials.train import TrainingSettings, split_indices, train_committee
    from mfal.potentials.widen import widened_committee
    from mfal.systems.dataset import kept_split, split_ids

    if not data.is_file():
        raise MfalError(f"training data file {data} does not exist")
    if warm_start is not None and not warm_start.is_file():
        raise MfalError(f"warm-start committee file {warm_start} does not exist")
    if widen and warm_start is None:
        raise MfalError("--widen widens the --warm-start committee; name one")
    if keep_splits is not None and not keep_splits.is_file():
        raise MfalError(f"splits file {keep_splits} does not exist")
    try:
        structures = ase.io.read(data, index=":")
    except Exception as exc:  # ASE raises many kinds for unreadable files
        raise MfalError(f"cannot read structures from {data}: {exc}") from exc
    named = all("config_id" in atoms.info for atoms in structures)
    if keep_splits is not None and not named:
        raise MfalError(f"--keep-splits finds structures by config_id, and some structures in {data} have none")
    kept = None if keep_splits is None else kept_split(structures, keep_splits)
    settings = TrainingSettings(
        energy_key=energy_key,
        forces_key=forces_key,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        learning_rate=learning_rate,
        energy_weight=energy_weight,
        forces_weight=forces_weight,
        seed=seed,
        dtype=dtype,
        device=device,
        bootstrap=bootstrap,
    )
    initial = None if warm_start is None else Committee.load(warm_start, device=device)
    if widen:
        initial = widened_committee(initial)
    trained, metrics = train_committee(
        structures,
        committee,
        settings=settings,
        architecture_options=None if initial is not None else {
            "r_max": r_max, "channels": channels, "max_L": max_l, "num_interactions": num_interactions,
            "pair_repulsion": pair_repulsion},
        progress=True,
        jobs=jobs,
        initial=initial,
        kept_split=kept,
    )
    output.mkdir(parents=True, exist_ok=True)
    trained.save(output / "committee.pt")
    if named:
        splits = split_indices(len(structures), valid_fraction, test_fraction, seed, kept)
        (output / "splits.json").write_text(json.dumps(split_ids(structures, splits), indent=1) + "\n")
    metrics["data"] = str(data)
    metrics["warm_start"] = None if warm_start is None else str(warm_start)
    metrics["widened"] = widen
    metrics["kept_splits"] = None if keep_splits is None else str(keep_splits)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if export_mace:
        trained.export_mace_models(output / "mace_models")
    test = metrics["test"]
    typer.echo(
        f"{committee} members -> {output / 'committee.pt'}; held-out test ({test['n_structures']} structures): "
        f"energy RMSE {test['energy_rmse_mev_per_atom']:.2f} meV/atom, force RMSE {test['force_rmse_mev_per_a']:.1f} meV/Å"
    )
