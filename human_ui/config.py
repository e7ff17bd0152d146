"""Settings of the labeling app, one frozen dataclass validated on creation."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from human_ui.connections import ConnectionLimits

MODES = ("pair", "triplet")
SELECTIONS = ("uniform", "disagreement")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class UIConfig:
    """How the labeling server runs and which queries it asks."""

    host: str = "127.0.0.1"
    """Interface to bind. Anything but a loopback address exposes the app and makes
    annotator tokens mandatory."""
    port: int = 8765
    """TCP port (0 picks a free one)."""
    mode: str = "pair"
    """``pair``: two clips side by side; ``triplet``: three clips ranked best to worst."""
    selection: str = "uniform"
    """How new queries are drawn from the clip pool: ``uniform`` or ``disagreement`` (the
    reward ensemble's members disagree most; uniform until a reward model exists)."""
    reward: Path | None = None
    """Reward ensemble checkpoint for ``disagreement`` selection and the agreement page."""
    retrain_every: int = 0
    """Refit the reward ensemble in the background after this many new labels (0: never),
    so that active selection stays current."""
    reward_epochs: int = 50
    """Epochs of each background refit."""
    batch_size: int = 8
    """Queries selected (and stored) at a time when the queue runs dry."""
    oversample: int = 10
    """Candidates scored per query selected by disagreement."""
    overlap: float = 0.1
    """Share of queries also shown to a second annotator (for agreement statistics)."""
    lease_s: float = 900.0
    """How long a query handed to one annotator stays theirs alone (renewed while they look
    at it); after that an unanswered query can go to someone else."""
    public_url: str | None = None
    """The address people open (e.g. ``https://labels.example.org`` behind a reverse proxy):
    used in the links ``annotators add`` prints and accepted as the page's origin. Setting it
    makes annotator tokens mandatory (others reach the server through it)."""
    limits: ConnectionLimits = ConnectionLimits()
    """Read timeouts and the per-address connection cap (docs/exposing_the_labeling_app.md)."""
    require_token: bool | None = None
    """Demand an annotator token on every request; None: when ``host`` is not loopback or a
    ``public_url`` is set."""
    local_annotator: str = "local"
    """Annotator name of token-less requests on a loopback-bound server."""
    max_body_bytes: int = 4096
    """Largest request body accepted (413 above)."""
    seed: int = 0
    """Seeds query selection."""

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"field 'host': expected a host name or address, found {self.host!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"field 'port': expected an int in 0..65535, found {self.port!r}")
        if self.mode not in MODES:
            raise ValueError(f"field 'mode': expected one of {MODES}, found {self.mode!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"field 'selection': expected one of {SELECTIONS}, found {self.selection!r}")
        if self.reward is not None:
            object.__setattr__(self, "reward", Path(self.reward))
        for name, minimum in (("retrain_every", 0), ("reward_epochs", 1), ("batch_size", 1),
                              ("oversample", 1), ("max_body_bytes", 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"field '{name}': expected an int >= {minimum}, found {value!r}")
        if isinstance(self.lease_s, bool) or not isinstance(self.lease_s, (int, float)) or self.lease_s <= 0:
            raise ValueError(f"field 'lease_s': expected seconds > 0, found {self.lease_s!r}")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("field 'public_url': expected an http(s) address like "
                                 f"https://labels.example.org, found {self.public_url!r}")
        if not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap <= 1:
            raise ValueError(f"field 'overlap': expected a share in [0, 1], found {self.overlap!r}")
        if not self.local_annotator.strip():
            raise ValueError("field 'local_annotator': expected a non-empty name")

    @property
    def tokens_required(self) -> bool:
        """Whether requests must carry a valid annotator token."""
        if self.require_token is not None:
            return self.require_token
        return not is_loopback(self.host) or self.public_url is not None

    @property
    def clips_per_query(self) -> int:
        return 2 if self.mode == "pair" else 3
