"""Annotator accounts of a dataset: each person gets a secret token (only its hash is stored)."""

from __future__ import annotations

from pathlib import Path

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig
from human_ui.server import url_for


def add_annotator(dataset: str | Path, name: str, config: UIConfig = UIConfig()) -> str:
    """Register annotator ``name`` in ``dataset``, print their personal link, return the token.

    The token is shown once; only its sha256 is stored. Give each person their own link.
    """
    with PreferenceDataset.open(dataset) as store:
        token = store.add_annotator(name)
    print(f"annotator {name!r} added to {dataset}; their token (shown once): {token}")
    print(f"their link: {url_for(config.host, config.port)}?token={token}")
    return token
