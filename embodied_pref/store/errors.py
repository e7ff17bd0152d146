"""The store's one exception."""


class DatasetError(Exception):
    """A dataset file is missing, corrupt, of another format version, or given bad input.

    The message names the file (or database) and the field.
    """


class ConflictError(DatasetError):
    """A write refused because of what another writer stored first (an annotator answering a
    query they already answered)."""
