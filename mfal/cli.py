"""The ``mfal`` command.

Heavy libraries (torch, mace, FireWorks) are imported inside the commands that
need them, so ``mfal db status`` and ``mfal history`` answer at once. Errors a
user can cause are :class:`mfal.errors.MfalError`; :func:`main` prints them as one
line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mfal.errors import ConfigError, MfalError
from mfal.potentials.cli import train_base
from mfal.qmc.cli import app as qmc_app
from mfal.report_cli import history_plot, report

app = typer.Typer(
    help="Active-learning, multi-fidelity orchestrator: lift MACE potentials from DFT to QMC accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The embedded MongoDB-compatible database for local use.", no_args_is_help=True)
campaign_app = typer.Typer(help="Create, run and list active-learning campaigns.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(campaign_app, name="campaign")
app.add_typer(qmc_app, name="qmc")
app.command("report")(report)
app.command("train-base")(train_base)

console = Console()
error_console = Console(stderr=True)

LaunchpadOption = typer.Option(
    None,
    "--launchpad",
    "-l",
    help="FireWorks launchpad file naming the database (default: $MFAL_LAUNCHPAD, my_launchpad.yaml, "
    "$MFAL_MONGO_URI, else the embedded server).",
)


def open_store(launchpad: Optional[Path]):
    """The provenance store on the database every mfal and FireWorks command agrees on."""
    from mfal.connection import resolve_target
    from mfal.store import Store

    return Store.from_target(resolve_target(launchpad))


# -- mfal db ---------------------------------------------------------------------
@db_app.command("start")
def db_start(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: the last one used, else a free one)."),
    storage_path: Optional[Path] = typer.Option(None, help="Storage directory (default: $MFAL_HOME/db)."),
    auth: bool = typer.Option(False, "--auth", help="Require SCRAM authentication from now on: creates a user "
                              "with a generated password, kept in $MFAL_HOME/db.credentials.yaml (mode 0600)."),
) -> None:
    """Start the embedded database (does nothing if it is already running)."""
    from mfal.db import EmbeddedServer

    console.print(EmbeddedServer(storage_path=storage_path).start(port=port, auth=auth).describe())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded database cleanly."""
    from mfal.db import EmbeddedServer

    stopped = EmbeddedServer().stop()
    console.print("embedded database stopped" if stopped else "embedded database was not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded database runs, where, and since when."""
    from mfal.db import EmbeddedServer

    console.print(EmbeddedServer().status().describe())


@db_app.command("launchpad-file")
def db_launchpad_file(
    path: Path = typer.Argument(Path("my_launchpad.yaml"), help="File to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write the my_launchpad.yaml that points plain lpad/rlaunch at the embedded database (mode 0600)."""
    import yaml

    from mfal.connection import embedded_target
    from mfal.paths import write_private_text

    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    write_private_text(path, yaml.safe_dump(embedded_target().launchpad_dict(), sort_keys=False))
    console.print(f"wrote {path}: use it with 'lpad -l {path}' and 'mfal-rlaunch -l {path}' (FireWorks' rlaunch; "
                  "parallel workers on this server need mfal-rlaunch, see the README)")


# -- mfal campaign ---------------------------------------------------------------
@campaign_app.command("list")
def campaign_list(
    launchpad: Optional[Path] = LaunchpadOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the campaigns in the database with their state."""
    campaigns = open_store(launchpad).list_campaigns()
    rows = [
        {"campaign": c["_id"], "state": c.get("state"), "created_at": c.get("created_at"), "updated_at": c.get("updated_at")}
        for c in campaigns
    ]
    if as_json:
        print(json.dumps(rows, default=str, indent=1))
        return
    if not rows:
        console.print("no campaigns in the database yet")
        return
    table = Table("campaign", "state", "created", "updated")
    for row in rows:
        table.add_row(row["campaign"], str(row["state"]), _time(row["created_at"]), _time(row["updated_at"]))
    console.print(table)


@campaign_app.command("add")
def campaign_add(
    config: Path = typer.Argument(..., help="Campaign config (YAML)."),
    launchpad: Optional[Path] = LaunchpadOption,
) -> None:
    """Validate a campaign config and add its first cycle to the LaunchPad."""
    from mfal.campaign import add_campaign
    from mfal.config import load_config
    from mfal.connection import resolve_target
    from mfal.store import Store

    campaign_config = load_config(config)
    target = resolve_target(launchpad)
    first_id = add_campaign(target.launchpad(), Store.from_target(target), campaign_config)
    console.print(f"added campaign {campaign_config.name!r} (first firework id {first_id}) to {target.describe()}")
    console.print("run workers with 'mfal-rlaunch rapidfire' or 'rlaunch rapidfire' (or 'mfal campaign run') "
                  f"and follow it with 'mfal history {campaign_config.name}'")


@campaign_app.command("run")
def campaign_run(
    config: Path = typer.Argument(..., help="Campaign config (YAML)."),
    launchpad: Optional[Path] = LaunchpadOption,
    workers: int = typer.Option(1, "--workers", "-n", min=1, help="Parallel rlaunch workers (QMC labels of a cycle run side by side)."),
) -> None:
    """Add a campaign (or pick up an unfinished one) and run it here with rlaunch until it ends."""
    from mfal.config import load_config
    from mfal.runner import run_campaign_locally

    summary = run_campaign_locally(load_config(config), launchpad, console, workers=workers)
    history(summary.name, launchpad=launchpad, as_json=False, plot=False)
    console.print(summary.final_line())


@campaign_app.command("resume")
def campaign_resume(
    campaign: str = typer.Argument(..., help="Campaign name."),
    launchpad: Optional[Path] = LaunchpadOption,
    expiration: Optional[float] = typer.Option(
        None, "--expiration", min=0,
        help="Seconds without a ping after which a RUNNING firework counts as lost "
        "(default: FireWorks' RUN_EXPIRATION_SECS, 4 h; use less when you know its worker is gone)."),
    run: bool = typer.Option(False, "--run/--no-run", help="Continue the campaign here with rlaunch afterwards."),
    workers: int = typer.Option(1, "--workers", "-n", min=1, help="Parallel rlaunch workers with --run."),
) -> None:
    """Rerun a campaign's lost and fizzled fireworks (never completed ones), optionally run it on."""
    from mfal.config import config_from_dict
    from mfal.connection import resolve_target
    from mfal.resume import DEFAULT_EXPIRATION_S, resume_campaign
    from mfal.runner import run_campaign_locally
    from mfal.store import Store

    target = resolve_target(launchpad)
    store = Store.from_target(target)
    expiration_s = DEFAULT_EXPIRATION_S if expiration is None else expiration
    report = resume_campaign(target.launchpad(), store, campaign, expiration_s)
    for line in report.lines(expiration_s):
        console.print(f"campaign {campaign!r}: {line}")
    if run:
        if report.running:
            console.print(f"campaign {campaign!r}: the workers here also wait for the {len(report.running)} RUNNING "
                          "firework(s) above; if their workers are gone, stop and resume with a shorter --expiration")
        config = config_from_dict(store.get_campaign(campaign)["config"], source=f"campaign {campaign!r}")
        summary = run_campaign_locally(config, launchpad, console, workers=workers)
        history(summary.name, launchpad=launchpad, as_json=False, plot=False)
        console.print(summary.final_line())


# -- mfal history ----------------------------------------------------------------
@app.command("history")
def history(
    campaign: str = typer.Argument(..., help="Campaign name."),
    launchpad: Optional[Path] = LaunchpadOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of a table."),
    plot: bool = typer.Option(False, "--plot", help="Also draw barrier ± spread per cycle as a text chart."),
) -> None:
    """Convergence history of a campaign: barrier, committee spread, QMC labels and wall time per cycle."""
    rows = open_store(launchpad).history(campaign)
    if as_json:
        print(json.dumps(rows, default=str, indent=1))
        return
    if not rows:
        console.print(f"campaign {campaign!r} has no cycles yet")
        return
    if plot:
        print(history_plot(rows))
    table = Table("cycle", "state", "barrier (eV)", "spread (eV)", "QMC labels", "wall time (s)", title=campaign)
    for row in rows:
        table.add_row(
            str(row["cycle"]),
            row["state"],
            _number(row["barrier"], "{:.4f}"),
            _number(row["barrier_spread"], "{:.4f}"),
            str(row["n_labels"]),
            _number(row["wall_time_s"], "{:.1f}"),
        )
    console.print(table)


def _number(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def main() -> None:
    """Console entry point: run the app, turning user errors into one clear line on stderr."""
    from pymongo.errors import PyMongoError

    from mfal.connection import database_failure

    _quiet_library_warnings()
    try:
        app()
    except MfalError as exc:
        _fail(str(exc))
    except PyMongoError as exc:
        _fail(f"database error: {database_failure(exc)}")


def _quiet_library_warnings() -> None:
    """Hide warnings that libraries print on import and a user can do nothing about."""
    warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")


def _fail(message: str) -> None:
    print(f"mfal: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(1)
