"""The preference dataset store: ``PreferenceDataset`` over SQLite (a directory, the default)
or PostgreSQL (a URL), with its arrays, videos and previews as files.

- ``dataset``: ``PreferenceDataset``, the public API;
- ``location``: directories and URLs, engines and connection settings;
- ``schema``: the tables and the migrations between format versions;
- ``arrays``: a trajectory's npz and mp4 files;
- ``previews``: H.264 previews of clips.
"""

from embodied_pref.store.dataset import PreferenceDataset
from embodied_pref.store.errors import ConflictError, DatasetError

__all__ = ["ConflictError", "DatasetError", "PreferenceDataset"]
