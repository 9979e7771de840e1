"""The errors the state engine raises, so callers can tell damage from misuse."""


class PipulateError(Exception):
    """Base class of every error the state engine raises on purpose."""


class IntegrityError(PipulateError):
    """Stored data is damaged, missing or does not match its hash."""


class UntrustedDataError(IntegrityError):
    """Pickled data is unsigned or signed with another key: it is never unpickled."""


class StoreUnavailableError(PipulateError):
    """The store cannot be written (read-only folder, disk full, locked too long)."""
