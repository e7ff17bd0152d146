"""Train RAPL's encoder on the triplet rankings stored in a dataset (people ranking 3 clips
in the labeling app's triplet mode).

```
dataset ──3-clip queries + RANKING labels──▶ Triplets ──split by query──▶ train / held out
clip frames, each camera seen ──every stride-th, resized──▶ videos ──frozen backbone──▶ features (N, T, F)
features + train triplets ──train_alignment──▶ projection ──▶ encoder file (encoder_weights)
```
The backbone stays frozen: its features are computed once and only the projection is
trained, as in the RAPL experiment's `fine_tune=False` setting, so this runs on a CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embodied_pref.data import Label, Outcome, Query
from embodied_pref.rapl.alignment import LOSSES, AlignmentConfig, train_alignment, triplet_accuracy
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder, pad_videos, resize_frames
from embodied_pref.distributed import distributed_context, is_main_process
from embodied_pref.rapl.training import OptimConfig
from embodied_pref.rapl.triplets import triplets_from_labels
from embodied_pref.store import PreferenceDataset


@dataclass(frozen=True)
class StoredRankingsConfig:
    """Videos, encoder, split and optimization of alignment training on stored rankings."""

    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(image_size=64, freeze_backbone=True, pool_grid=2))
    """Backbone (frozen; random init unless --encoder.pretrained, with
    --encoder.pretrained-source package for EfficientNet-Lite0 offline, or --encoder.encoder-weights),
    projection width and frame size. The 2×2 pooling grid keeps where things are in the frame."""
    stride: int = 2
    """Keep every stride-th frame of a clip (a 50-step clip: 26 frames)."""
    own_frames: bool = True
    """The encoder sees each clip's own frames (the camera people compared)."""
    cameras: tuple[str, ...] = ()
    """Further cameras it sees as well (or instead, without own_frames): the names stored with
    the trajectories (`import-recordings --encoder-cameras`). The frames of every camera seen
    form one set per clip, which the optimal-transport matching compares as a whole."""
    held_out: float = 0.2
    """Share of the ranked queries held out for triplet accuracy (whole queries, drawn by seed)."""
    epochs: int = 50
    """Passes over the training triplets."""
    batch_size: int = 16
    """Triplets per optimizer step."""
    learning_rate: float = 1e-4
    """AdamW step size of the projection (1e-3 can collapse the embedding of random-init
    features to a point where every OT return is equal)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    loss: str = "rapl"
    """"rapl" (1 − P; equal neutral/negative: (0.5 − P)²) or "bradley_terry" (−log P)."""
    seed: int = 0
    """Seeds the projection's initialization, the split and the batch order."""
    device: str = "auto"
    """"auto": CUDA when available, else CPU."""

    def __post_init__(self) -> None:
        if not self.encoder.freeze_backbone:
            raise ValueError("field 'encoder.freeze_backbone': expected True (only the projection is trained, "
                             "on precomputed backbone features), found False")
        if self.stride < 1:
            raise ValueError(f"field 'stride': expected an int >= 1, found {self.stride!r}")
        if not self.own_frames and not self.cameras:
            raise ValueError("field 'cameras': expected at least one camera when own_frames is False")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"field 'cameras': expected distinct names, found {list(self.cameras)}")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"field 'held_out': expected a share in [0, 1), found {self.held_out!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"field 'loss': expected one of {LOSSES}, found {self.loss!r}")

    def alignment(self) -> AlignmentConfig:
        """The alignment training these fields describe."""
        return AlignmentConfig(loss=self.loss, optim=OptimConfig(
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, seed=self.seed, device=self.device, resume=False))


@dataclass(frozen=True)
class StoredRankingsReport:
    """What one training run used and how well the encoder ranks held-out triplets."""

    clips: int
    """Clips (videos) the ranked queries show."""
    train_queries: int
    """Ranked queries whose labels were trained on."""
    held_out_queries: int
    """Ranked queries held out."""
    train_triplets: int
    """Triplets (one per RANKING label) trained on."""
    held_out_triplets: int
    """Triplets held out."""
    equal_triplets: int
    """Triplets (train and held out) whose neutral and negative clips were ranked equal."""
    held_out_accuracy_before: float
    """Share of held-out non-equal triplets ranked right (OT return of neutral > negative,
    against the positive) by the initial projection; NaN without such triplets."""
    held_out_accuracy_after: float
    """The same share after training."""


def ranked_queries(queries: list[Query], labels: list[Label]) -> list[Query]:
    """The 3-clip queries with at least one RANKING label, in their given order."""
    ranked = {label.query_id for label in labels if label.outcome is Outcome.RANKING}
    return [q for q in queries if len(q.clip_ids) == 3 and q.id in ranked]


def clip_videos(dataset: PreferenceDataset, clip_ids: list[str], stride: int, image_size: int,
                cameras: Sequence[str | None] = (None,)) -> torch.Tensor:
    """Every stride-th frame of each clip from each of `cameras` (None: the clip's own frames,
    a name: a further camera of its trajectory), resized and joined camera after camera:
    (N, T, S, S, 3) uint8 (shorter clips repeat their last frame)."""
    out = []
    for clip_id in clip_ids:
        views = [dataset.clip_frames(clip_id, camera) for camera in cameras]
        if any(frames is None for frames in views):
            raise ValueError(f"{dataset.path}: clip {clip_id!r} has no frames; RAPL learns from video, so "
                             "record the dataset with `embodied-pref collect --frames`")
        out.append(torch.cat([resize_frames(torch.from_numpy(frames[::stride].copy()), image_size)
                              for frames in views]))
    return pad_videos(out)


def split_queries(queries: list[Query], held_out: float, rng: np.random.Generator) -> tuple[list[Query], list[Query]]:
    """(train, held out) queries: a random `held_out` share (at least one query when the
    share is positive, at most all but one) is held out."""
    n_held = min(len(queries) - 1, max(1, round(held_out * len(queries)))) if held_out > 0 else 0
    order = rng.permutation(len(queries))
    return [queries[i] for i in order[n_held:]], [queries[i] for i in order[:n_held]]


def train_on_stored_rankings(dataset: PreferenceDataset, out: Path,
                             config: StoredRankingsConfig = StoredRankingsConfig()) -> StoredRankingsReport:
    """Aligns a FrameEncoder's projection on the dataset's triplet rankings and saves the
    encoder's state dict to `out` (reusable as `EncoderConfig.encoder_weights`)."""
    labels = dataset.labels()
    queries = ranked_queries(dataset.queries(), labels)
    if not queries:
        raise ValueError(f"{dataset.path}: no 3-clip query has a ranking label; rank triplets in the labeling app "
                         f"(`embodied-pref label --dataset {dataset.path} --ui --server.mode triplet`)")
    train_q, held_q = split_queries(queries, config.held_out, np.random.default_rng(config.seed))
    clip_ids = list(dict.fromkeys(c for q in queries for c in q.clip_ids))
    index = {c: i for i, c in enumerate(clip_ids)}
    train, held = triplets_from_labels(train_q, labels, index), triplets_from_labels(held_q, labels, index)

    cameras = ([None] if config.own_frames else []) + list(config.cameras)
    videos = clip_videos(dataset, clip_ids, config.stride, config.encoder.image_size, cameras)
    torch.manual_seed(config.seed)
    encoder = FrameEncoder(config.encoder).eval().to(distributed_context(config.device).device)
    with torch.no_grad():
        features = encoder.features(videos.to(next(encoder.parameters()).device))
    alignment = config.alignment()
    before = triplet_accuracy(encoder.projection, features, held, alignment.ot)
    train_alignment(encoder.projection, features, train, alignment)
    after = triplet_accuracy(encoder.projection, features, held, alignment.ot)
    report = StoredRankingsReport(
        clips=len(clip_ids), train_queries=len(train_q), held_out_queries=len(held_q), train_triplets=len(train),
        held_out_triplets=len(held), equal_triplets=int(train.equal.sum() + held.equal.sum()),
        held_out_accuracy_before=before, held_out_accuracy_after=after)
    if is_main_process():
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": encoder.cpu().state_dict(), "dataset": str(dataset.path), "stride": config.stride,
                    "own_frames": config.own_frames, "cameras": list(config.cameras),
                    "encoder": {k: str(v) for k, v in dataclasses.asdict(config.encoder).items()},
                    "report": dataclasses.asdict(report)}, out)
    return report
