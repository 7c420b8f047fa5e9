"""Reading a YAML file that must hold a mapping, with errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path

import yaml

from mfal.errors import ConfigError


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The mapping in ``path``; ``what`` names the file in errors (e.g. "launchpad file")."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, not {type(record).__name__}")
    return record


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and where it was, on one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
