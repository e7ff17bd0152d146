"""Annotator accounts of a dataset: each person gets a secret token (only its hash is stored)
and a role (annotator or owner)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from embodied_pref.store import PreferenceDataset
from human_ui.config import UIConfig, is_loopback
from human_ui.server import url_for


def link_base(config: UIConfig) -> tuple[str, str]:
    """(the address people open, a caveat or ""): ``public_url`` if set; for a wildcard
    bind (0.0.0.0, ::) this machine's host name; a loopback bind only reaches this machine."""
    if config.public_url:
        return config.public_url.rstrip("/") + "/", ""
    host = config.host.strip("[]")
    if is_loopback(host):
        return url_for(config.host, config.port), (
            "this link opens only on this machine; for other people run the server with "
            "--server.host 0.0.0.0 (or behind a proxy) and pass --server.public-url")
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard:
        return url_for(socket.getfqdn(), config.port), (
            f"built from this machine's name ({socket.getfqdn()}); pass --server.public-url if "
            "people reach the server by another address")
    return url_for(config.host, config.port), ""


def add_annotator(dataset: str | Path, name: str, config: UIConfig = UIConfig(),
                  role: str = "annotator") -> str:
    """Register ``name`` in ``dataset`` with ``role``, print their personal link, return the
    token. The token is shown once; only its sha256 is stored. Give each person their own link.
    """
    with PreferenceDataset.open(dataset) as store:
        token = store.add_annotator(name, role)
    base, caveat = link_base(config)
    print(f"{role} {name!r} added to {dataset}; their token (shown once): {token}")
    print(f"their link: {base}?token={token}")
    if caveat:
        print(f"  ({caveat})")
    return token
