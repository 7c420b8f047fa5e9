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


def write_private_text(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600), e.g. one holding a password.

    The mode is set when the file is created, so the text is never readable by
    others, not even for a moment; an existing file is narrowed to 0600 first.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(text)
