"""Choosing a backend from a campaign's ``qmc:`` section.

The section names its backend (``backend: qmcpack``) next to that backend's
settings; :data:`QmcSettings` is the union the campaign config embeds, and
:func:`backend_for` builds the backend object that labels structures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from mfal.errors import ConfigError
from mfal.qmc.base import QmcBackend
from mfal.qmc.pyqmc_backend import PyqmcBackend, PyqmcSettings
from mfal.qmc.qmcpack import QmcpackBackend, QmcpackSettings, WorkerCommands
from mfal.qmc.surrogate import SurrogateBackend, SurrogateSettings

QmcSettings = Annotated[QmcpackSettings | PyqmcSettings | SurrogateSettings,
                        Field(discriminator="backend")]

BACKENDS = {"qmcpack": QmcpackBackend, "pyqmc": PyqmcBackend, "surrogate": SurrogateBackend}


_PATH_KEYS = {"qmcpack": ("pseudo_dir",), "pyqmc": (), "surrogate": ("model_file",)}


def parse_qmc_settings(section: Mapping[str, Any], base_dir: str | Path | None = None) -> QmcSettings:
    """Validate a ``qmc:`` section; relative paths in it are taken from ``base_dir``.

    Raises :class:`~mfal.errors.ConfigError` naming the backends when ``backend``
    is missing or unknown, and pydantic's ``ValidationError`` (which names the
    offending field) for bad settings.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"the qmc section must be a mapping; got {type(section).__name__}")
    backend = section.get("backend")
    if backend not in BACKENDS:
        raise ConfigError(f"qmc.backend must be one of {sorted(BACKENDS)}; got {backend!r}")
    section = dict(section)
    for key in _PATH_KEYS[backend]:
        if base_dir is not None and section.get(key) is not None:
            path = Path(section[key]).expanduser()
            section[key] = str(path if path.is_absolute() else Path(base_dir) / path)
    return TypeAdapter(QmcSettings).validate_python(section)


def backend_for(settings: QmcSettings, worker_env: Mapping[str, str] | None = None) -> QmcBackend:
    """The backend for these settings; ``worker_env`` is the worker's FireWorks env."""
    if isinstance(settings, QmcpackSettings):
        return QmcpackBackend(settings, WorkerCommands.from_env(worker_env))
    if isinstance(settings, PyqmcSettings):
        return PyqmcBackend(settings)
    if isinstance(settings, SurrogateSettings):
        return SurrogateBackend(settings)
    raise ConfigError(f"no backend for settings of type {type(settings).__name__}")


__all__ = ["BACKENDS", "QmcSettings", "backend_for", "parse_qmc_settings"]
