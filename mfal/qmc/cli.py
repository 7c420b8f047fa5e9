"""``mfal qmc``: analyse QMCPACK output like qmca, and write QMC input decks by hand."""

from __future__ import annotations

from pathlib import Path

import typer

from mfal.errors import MfalError

app = typer.Typer(help="QMC tools: qmca-exact analysis and input decks for inspection.",
                  no_args_is_help=True)


@app.callback()
def qmc() -> None:
    """QMC tools: qmca-exact analysis and input decks for inspection."""


def _integers(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be integers separated by spaces; got {text!r}") \
            from None


@app.command()
def analyse(
    paths: list[Path] = typer.Argument(..., help="scalar.dat or dmc.dat files."),
    equilibration: str = typer.Option("auto", "-e", "--equilibration",
                                      help="Blocks to drop: 'auto', N, or 'N0 N1 ...' per series."),
    average: bool = typer.Option(False, "-a", "--average", help="Twist-average the files."),
    weights: str = typer.Option(None, "-w", "--weights", help="Twist weights, 'W1 W2 ...'."),
    join: str = typer.Option(None, "-j", "--join", help="Join series 'A B' into one."),
    quantities: str = typer.Option("all", "-q", "--quantities",
                                   help="Quantities, qmca names or abbreviations (e, ev, 'e k p')."),
    precision: str = typer.Option(None, "--fp", help="Float format of the numbers, e.g. 16.8f."),
) -> None:
    """Print the statistics qmca prints for these files, in qmca's format."""
    from mfal.qmc import qmca

    eq: str | list[int] = equilibration if equilibration == "auto" \
        else _integers(equilibration, "-e")
    weight_values = None
    if weights is not None:
        try:
            weight_values = [float(w) for w in weights.replace(",", " ").split()]
        except ValueError:
            raise typer.BadParameter(f"-w must be numbers separated by spaces; got {weights!r}") \
                from None
    join_pair = None
    if join is not None:
        join_pair = _integers(join, "-j")
        if len(join_pair) != 2:
            raise typer.BadParameter(f"-j needs two series numbers 'A B'; got {join!r}")
    try:
        results = qmca.qmca(paths, equilibration=eq, average=average, weights=weight_values,
                            join=tuple(join_pair) if join_pair else None)
        text = qmca.format_results(results, qmca.parse_quantities(quantities), precision)
    except MfalError as exc:
        typer.echo(f"mfal: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(text, nl=False)


@app.command()
def write(
    config: Path = typer.Argument(..., help="YAML file whose 'qmc:' section holds the backend "
                                            "and its settings."),
    structure: Path = typer.Option(..., "--structure", "-s", help="Structure file ASE reads."),
    out: Path = typer.Option(..., "--out", "-o", help="Job directory to write."),
) -> None:
    """Write the input deck of one structure for inspection (nothing is run)."""
    import yaml
    from ase.io import read
    from pydantic import ValidationError

    from mfal.qmc.registry import backend_for, parse_qmc_settings

    try:
        document = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        typer.echo(f"mfal: error: cannot read {config}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not isinstance(document, dict) or "qmc" not in document:
        typer.echo(f"mfal: error: {config} has no 'qmc:' section", err=True)
        raise typer.Exit(code=2)
    try:
        atoms = read(structure)
    except Exception as exc:
        typer.echo(f"mfal: error: cannot read structure {structure}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    try:
        settings = parse_qmc_settings(document["qmc"], base_dir=config.resolve().parent)
        job = backend_for(settings).prepare(atoms, out)
    except ValidationError as exc:
        typer.echo(f"mfal: error: invalid qmc settings in {config}:\n{exc}", err=True)
        raise typer.Exit(code=2) from None
    except MfalError as exc:
        typer.echo(f"mfal: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    for path in sorted(job.iterdir()):
        typer.echo(str(path))
