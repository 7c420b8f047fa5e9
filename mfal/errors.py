"""Exception hierarchy shared by all of mfal.

Every error a user can cause (bad config, unknown campaign, unreachable database,
malformed input file) is an :class:`MfalError`; the command line turns these into a
one-line message and a non-zero exit code instead of a traceback.
"""


class MfalError(Exception):
    """Base class for errors that are reported to the user as one clear line."""


class ConfigError(MfalError):
    """A configuration file or option is missing, malformed or out of range."""


class DatabaseError(MfalError):
    """The database cannot be reached, or the embedded server cannot be managed."""


class StoreError(MfalError):
    """A provenance-store operation was asked for something inconsistent or unknown."""
