"""Settings of the labeling app, one frozen dataclass validated on creation."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

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
    require_token: bool | None = None
    """Demand an annotator token on every request; None: only when ``host`` is not loopback."""
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
        if not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap <= 1:
            raise ValueError(f"field 'overlap': expected a share in [0, 1], found {self.overlap!r}")
        if not self.local_annotator.strip():
            raise ValueError("field 'local_annotator': expected a non-empty name")

    @property
    def tokens_required(self) -> bool:
        """Whether requests must carry a valid annotator token."""
        return (not is_loopback(self.host)) if self.require_token is None else self.require_token

    @property
    def clips_per_query(self) -> int:
        return 2 if self.mode == "pair" else 3
