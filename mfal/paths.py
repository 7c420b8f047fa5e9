"""Where mfal keeps its local state.

Everything mfal writes outside a project directory (the embedded database, its
pid/port/log files) lives under ``$MFAL_HOME``, default ``~/.mfal``.
"""

import os
from pathlib import Path


def mfal_home() -> Path:
    """Return ``$MFAL_HOME`` (default ``~/.mfal``), creating it if needed."""
    home = Path(os.environ.get("MFAL_HOME") or Path.home() / ".mfal").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
