"""Fitting a reward ensemble to labelled segment pairs.

Each member sees its own bootstrap resample of the training pairs (so that their disagreement
means something), a held-out split drives early stopping, and the best weights are restored.

Labels may come with a flip rate each (their annotator's ε, see `annotator_reliability`): the
noise-aware Bradley–Terry likelihood of a label is then (1 − ε)·P_BT + ε·(1 − P_BT), so that an
unreliable annotator's labels pull the reward less (ε = 0.5: not at all);
`reliability_training` alternates the fit with the estimate of every annotator's ε.

Under `torchrun` (WORLD_SIZE > 1) every process draws the same split, resamples and batch
order (one seed), takes every world_size-th pair of each batch (DistributedSampler's
interleaving), and the gradients are averaged across processes before each step: a step
sees the same pairs as in a single process. The validation loss is averaged across processes,
so all stop at the same epoch with the same best weights; rank 0 alone writes the logs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from embodied_pref.distributed import (DistributedContext, average_gradients, distributed_context,
                                       mean_across_processes)
from embodied_pref.metrics import preference_accuracy
from embodied_pref.preference import PartialReturnModel
from embodied_pref.reward_nets import RewardEnsemble
from embodied_pref.segments import PreferencePairs, SegmentBatch, pair_sets


@dataclass(frozen=True)
class RewardTrainingConfig:
    """Optimization of the reward ensemble."""

    max_epochs: int = 300
    """Upper bound on passes over the training pairs."""
    batch_size: int = 64
    """Pairs per gradient step (under torchrun: over all processes, each computing its share)."""
    learning_rate: float = 1e-3
    """Adam step size."""
    weight_decay: float = 1e-2
    """Decoupled weight decay (AdamW); Bradley-Terry logits are unbounded, so without it the
    nets overfit the easy pairs within a few epochs."""
    validation_fraction: float = 0.2
    """Share of labelled pairs held out for early stopping (at least one pair)."""
    patience: int = 20
    """Epochs without validation improvement before stopping."""
    bootstrap: bool = True
    """Resample the training pairs per member."""
    seed: int = 0
    """Seeds the split, the resamples, the initialization and batch order."""
    device: str = "auto"
    """"auto" (CUDA when available; the local rank's GPU under torchrun), "cpu" or "cuda"."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction: expected in [0, 1), found {self.validation_fraction}"
            )
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")


@dataclass
class RewardTrainingReport:
    """What happened during fitting, epoch by epoch."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    n_train: int = 0
    n_validation: int = 0
    member_pairs: list[int] = field(default_factory=list)
    """Distinct training pairs in each member's (bootstrap) sample."""
    unseen: list[np.ndarray] = field(default_factory=list)
    """Per set of pairs, (K, N) bool: member k never trained on pair i nor on another pair of
    its query (validation pairs, and those its bootstrap resample left out): its prediction
    there is out of sample."""


def split_by_query(
    pairs: PreferencePairs, validation_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) indices: about `validation_fraction` of the pairs (at least one
    when the fraction is positive) held out, whole queries at a time when `pairs.groups` is set."""
    if not validation_fraction:
        return np.arange(0), np.arange(len(pairs))
    n_val = max(1, int(round(validation_fraction * len(pairs))))
    if pairs.groups is None:
        order = rng.permutation(len(pairs))
        return order[:n_val], order[n_val:]
    _, first_seen, group_of = np.unique(pairs.groups, return_index=True, return_inverse=True)
    group_of = np.argsort(np.argsort(first_seen))[group_of]  # groups numbered in order of appearance
    n_groups = len(first_seen)
    if n_groups < 2:
        raise ValueError(f"pairs: need labels of at least 2 queries to hold some out, found {n_groups}")
    order = rng.permutation(n_groups)
    held_pairs = np.cumsum(np.bincount(group_of)[order])
    n_held = min(int(np.searchsorted(held_pairs, n_val)) + 1, n_groups - 1)  # fewest groups reaching n_val
    in_val = np.isin(group_of, order[:n_held])
    return np.flatnonzero(in_val), np.flatnonzero(~in_val)


def segment_rewards(ensemble: RewardEnsemble, segments: SegmentBatch) -> torch.Tensor:
    """Per-step rewards of every member: (K, N, L)."""
    return ensemble(*segments.tensors(ensemble.device))


@torch.no_grad()
def preference_probabilities(
    ensemble: RewardEnsemble, pairs_first: SegmentBatch, pairs_second: SegmentBatch,
    model: PartialReturnModel = PartialReturnModel(),
) -> np.ndarray:
    """P(first ≻ second) under every member: (K, N)."""
    return model.probability(
        segment_rewards(ensemble, pairs_first), segment_rewards(ensemble, pairs_second)
    ).cpu().numpy()


def noise_aware_loss(
    model: PartialReturnModel, rewards_a: torch.Tensor, rewards_b: torch.Tensor, targets: torch.Tensor,
    flip_rates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood of the labels when each label says the opposite of the true
    preference with probability ε: P(label: first) = (1 − ε)·P_BT + ε·(1 − P_BT).

    rewards_a, rewards_b: (N, L); targets (N,) in [0, 1] (0.5: a tie); flip_rates (N,) in
    [0, 0.5] or None, which is `model.loss` itself (bit for bit). ε = 0.5 makes a label constant
    in the reward: it contributes no gradient.
    """
    if flip_rates is None:
        return model.loss(rewards_a, rewards_b, targets)
    logits = model.logits(rewards_a, rewards_b)
    log_keep, log_flip = torch.log1p(-flip_rates), torch.log(flip_rates)
    log_first, log_second = F.logsigmoid(logits), F.logsigmoid(-logits)
    says_first = torch.logaddexp(log_keep + log_first, log_flip + log_second)
    says_second = torch.logaddexp(log_flip + log_first, log_keep + log_second)
    return -(targets * says_first + (1 - targets) * says_second).mean()


def _flip_tensor(flip_rates: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if flip_rates is None else torch.as_tensor(flip_rates, dtype=torch.float32, device=device)


def _pairs_loss(ensemble: RewardEnsemble, pairs: PreferencePairs, model: PartialReturnModel,
                flip_rates: np.ndarray | None = None) -> torch.Tensor:
    """Summed over members."""
    targets = torch.as_tensor(pairs.targets, dtype=torch.float32, device=ensemble.device)
    flips = _flip_tensor(flip_rates, ensemble.device)
    ra, rb = segment_rewards(ensemble, pairs.first), segment_rewards(ensemble, pairs.second)
    return torch.stack([noise_aware_loss(model, ra[k], rb[k], targets, flips) for k in range(len(ra))]).sum()


def _flip_sets(flip_rates: np.ndarray | Sequence[np.ndarray] | None,
               sets: Sequence[PreferencePairs]) -> list[np.ndarray | None]:
    """One (N,) float32 array of flip rates per set of pairs; None where every rate is 0 (the
    plain loss)."""
    if flip_rates is None:
        return [None] * len(sets)
    given = [flip_rates] if isinstance(flip_rates, np.ndarray) else list(flip_rates)
    if len(given) != len(sets):
        raise ValueError(f"flip_rates: expected one array per set of pairs ({len(sets)}), found {len(given)}")
    result: list[np.ndarray | None] = []
    for i, (rates, pairs) in enumerate(zip(given, sets)):
        rates = np.asarray(rates, dtype=np.float32)
        if rates.shape != (len(pairs),):
            raise ValueError(f"flip_rates[{i}]: expected shape ({len(pairs)},) like its pairs, found {rates.shape}")
        if not np.all((rates >= 0) & (rates <= 0.5)):
            raise ValueError(f"flip_rates[{i}]: expected rates in [0, 0.5], found "
                             f"{rates[~((rates >= 0) & (rates <= 0.5))][:3].tolist()}")
        result.append(rates if rates.any() else None)
    return result


def train_reward(
    ensemble: RewardEnsemble,
    pairs: PreferencePairs | Sequence[PreferencePairs],
    config: RewardTrainingConfig = RewardTrainingConfig(),
    model: PartialReturnModel = PartialReturnModel(),
    log_dir: str | Path | None = None,
    flip_rates: np.ndarray | Sequence[np.ndarray] | None = None,
) -> RewardTrainingReport:
    """Fit `ensemble` in place on `pairs`; returns the learning curves.

    `pairs` may be several sets, one per clip length (e.g. 50-step clips and whole episodes):
    each set is split, resampled and batched on its own, and an epoch passes over every set.
    `flip_rates`, (N,) per set (a list for several sets), gives each label's ε for the
    noise-aware loss (`noise_aware_loss`), in training and in the validation loss that stops
    it; None (or all zeros) fits the plain model.
    """
    sets = pair_sets(pairs)
    if sum(len(s) for s in sets) < 2:
        raise ValueError(f"pairs: need at least 2 labelled pairs to train, found {sum(len(s) for s in sets)}")
    flip_sets = _flip_sets(flip_rates, sets)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    ctx = distributed_context(config.device)
    device = ctx.device
    ensemble.to(device)
    for module in ensemble.modules():  # every layer, the potential's too: a refit starts afresh
        if module is not ensemble and hasattr(module, "reset_parameters"):
            module.reset_parameters()

    splits = [split_by_query(s, config.validation_fraction, rng) for s in sets]
    vals = [s[val_index] for s, (val_index, _) in zip(sets, splits)]
    trains = [s[train_index] for s, (_, train_index) in zip(sets, splits)]
    val_flips = [None if f is None else f[val_index] for f, (val_index, _) in zip(flip_sets, splits)]
    train_flips = [None if f is None else f[train_index] for f, (_, train_index) in zip(flip_sets, splits)]
    n_val = sum(len(v) for v in vals)
    ensemble.fit_input_normalization(*_transitions(trains))
    k = len(ensemble.members)
    member_indices = [
        [rng.integers(0, len(train), len(train)) if config.bootstrap else np.arange(len(train)) for _ in range(k)]
        for train in trains
    ]
    report = RewardTrainingReport(
        n_train=sum(len(t) for t in trains), n_validation=n_val,
        member_pairs=[sum(len(np.unique(indices[m])) for indices in member_indices) for m in range(k)],
        unseen=[_unseen(s, train_index, indices) for s, (_, train_index), indices in zip(sets, splits, member_indices)])
    optimizer = torch.optim.AdamW(
        ensemble.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    writer = None
    if log_dir is not None and ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))

    best_loss, best_state, since_best = float("inf"), copy.deepcopy(ensemble.state_dict()), 0
    bar = tqdm(range(config.max_epochs), desc="reward", disable=not (config.progress and ctx.is_main), leave=False)
    for epoch in bar:
        ensemble.train()
        epoch_loss, n_batches = 0.0, 0
        for train, flips, indices in zip(trains, train_flips, member_indices):
            perms = [rng.permutation(idx) for idx in indices]
            for start in range(0, len(train), config.batch_size):
                loss = torch.zeros((), device=device)
                for member_k, perm in enumerate(perms):
                    batch_index, share = _rank_share(perm[start : start + config.batch_size], ctx)
                    batch = train[batch_index]
                    if len(batch) == 0:
                        continue
                    targets = torch.as_tensor(batch.targets, dtype=torch.float32, device=device)
                    member = ensemble.members[member_k]
                    ra = member(*batch.first.tensors(device))
                    rb = member(*batch.second.tensors(device))
                    batch_flips = None if flips is None else _flip_tensor(flips[batch_index], device)
                    loss = loss + share * noise_aware_loss(model, ra, rb, targets, batch_flips)
                optimizer.zero_grad()
                if loss.requires_grad:  # under torchrun a batch smaller than world_size leaves some processes none
                    loss.backward()
                if ctx.world_size > 1:
                    average_gradients(ensemble.parameters(), ctx)
                optimizer.step()
                epoch_loss += loss.item() / k
                n_batches += 1
        train_loss = epoch_loss / max(n_batches, 1)

        ensemble.eval()
        if n_val:
            val_loss, accuracy = _validation(ensemble, [(v, f) for v, f in zip(vals, val_flips) if len(v)], model)
        else:
            val_loss, accuracy = train_loss, float("nan")
        train_loss, val_loss, accuracy = mean_across_processes([train_loss, val_loss, accuracy], ctx)
        report.train_loss.append(train_loss)
        report.validation_loss.append(val_loss)
        report.validation_accuracy.append(accuracy)
        if writer is not None:
            writer.add_scalar("reward/train_loss", report.train_loss[-1], epoch)
            writer.add_scalar("reward/validation_loss", val_loss, epoch)
            writer.add_scalar("reward/validation_accuracy", accuracy, epoch)
        bar.set_postfix(train=f"{report.train_loss[-1]:.3f}", val=f"{val_loss:.3f}")

        if val_loss < best_loss - 1e-5:
            best_loss, best_state, since_best = val_loss, copy.deepcopy(ensemble.state_dict()), 0
            report.best_epoch = epoch
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    ensemble.load_state_dict(best_state)
    ensemble.eval()
    if writer is not None:
        writer.close()
    return report


def _rank_share(batch_index: np.ndarray, ctx: DistributedContext) -> tuple[np.ndarray, float]:
    """This process's pairs of a batch (every world_size-th from its rank on) and the weight of
    their mean loss: world_size × its share of the batch, so that the mean over processes of
    the weighted losses (and gradients) is the batch's mean loss; 1 in a single process."""
    mine = batch_index[ctx.rank :: ctx.world_size]
    return mine, len(mine) * ctx.world_size / max(len(batch_index), 1)


def _unseen(pairs: PreferencePairs, train_index: np.ndarray, member_indices: Sequence[np.ndarray]) -> np.ndarray:
    """(K, N) bool: pair i of `pairs` is out of member k's sample, its whole query with it."""
    keys = np.arange(len(pairs)) if pairs.groups is None else np.asarray(pairs.groups)
    return np.stack([~np.isin(keys, keys[train_index[indices]]) for indices in member_indices])


def _transitions(sets: Sequence[PreferencePairs]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(obs, acts, next_obs), each (N, ·): every step of every clip in `sets`."""
    def rows(pick) -> np.ndarray:
        arrays = [pick(segments) for s in sets for segments in (s.first, s.second)]
        return np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])

    return (rows(lambda b: b.observations[:, :-1]), rows(lambda b: b.actions), rows(lambda b: b.observations[:, 1:]))


@torch.no_grad()
def _validation(ensemble: RewardEnsemble, vals: Sequence[tuple[PreferencePairs, np.ndarray | None]],
                model: PartialReturnModel) -> tuple[float, float]:
    """(loss per pair and member, accuracy on decisive pairs) over every validation set, each
    given with its flip rates (None: the plain loss)."""
    k, n = len(ensemble.members), sum(len(v) for v, _ in vals)
    loss = sum(_pairs_loss(ensemble, v, model, f).item() * len(v) for v, f in vals) / (n * k)
    prob = np.concatenate([preference_probabilities(ensemble, v.first, v.second, model).mean(0) for v, _ in vals])
    return loss, preference_accuracy(prob, np.concatenate([v.targets for v, _ in vals])).accuracy
