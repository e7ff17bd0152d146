"""`embodied-pref train-policy`: one entry point for every policy learner, wiring a task's
env, a dataset, a learned reward and a pretrained policy to the trainers in `policies/`.

Part of the app layer (with `cli.py` and `experiments/`): it composes envs, core and policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import gymnasium
import numpy as np

from embodied_pref.experiments.tasks import episode_outcomes, scripted_episodes, task_spec
from embodied_pref.loop import standardized_on_pool
from embodied_pref.rapl.encoder import EncoderConfig, FrameEncoder
from embodied_pref.rapl.video_reward import OTVideoReward
from embodied_pref.reward_nets import PessimisticReward, RewardEnsemble, RewardFn
from embodied_pref.segments import clip_pool, labelled_pairs
from embodied_pref.store import PreferenceDataset
from policies.diffusion.bc import BCConfig, StatePolicyConfig, pretrain_state_policy
from policies.diffusion.dpo import DPOConfig, train_dpo
from policies.diffusion.dppo import DPPOConfig, DPPOPolicy, acting_sampler, load_trained_policy, train_dppo
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import run_episodes
from policies.diffusion.rwr import RWRConfig, train_rwr
from policies.ppo import PPOAgent, PPOConfig, latest_checkpoint
from policies.visual_reward import VisualRewardWrapper

Algorithm = Literal["ppo", "diffusion-bc", "diffusion-rwr", "diffusion-dpo", "dppo"]


@dataclass(frozen=True)
class TrainPolicyConfig:
    """What to train, on which task, from which data."""

    out: Path
    """Output: a directory for diffusion policies (config.json + model.safetensors), an SB3 zip for ppo."""
    algo: Algorithm = "ppo"
    """ppo: PPO on --reward (or the ground truth). diffusion-bc: BC on the trajectories of
    --dataset. diffusion-rwr / dppo: fine-tune --policy on --reward by reward-weighted
    regression / DPPO. diffusion-dpo: fine-tune --policy on the labels of --dataset."""
    task: str = "xmagical-sweep"
    """xmagical-sweep, xmagical-avoid, xmagical-group, franka-group or franka-clutter."""
    embodiment: str = "Gripper"
    """X-MAGICAL embodiment (Franka: Panda)."""
    observation: Literal["state", "pixels"] = "state"
    """pixels: PPO with a CNN policy on frames (--algo ppo only)."""
    layout: str | None = None
    """X-MAGICAL start layout: demo, random or jitter (default: the env's, demo)."""
    dataset: Path | None = None
    """Dataset directory: demonstrations (diffusion-bc), labels (diffusion-dpo), the clip pool
    that standardizes --reward (ppo, diffusion-rwr, dppo; RAPL: reference frames)."""
    reward: Path | None = None
    """Reward checkpoint: a reward ensemble (reward.pt from train-reward), or with
    --reward-kind rapl a RAPL encoder (from train-rapl)."""
    reward_kind: Literal["ensemble", "rapl"] = "ensemble"
    """ensemble: a state reward ensemble; rapl: the OT reward of a RAPL encoder against the
    dataset's best trajectory with frames (--algo ppo with --observation pixels)."""
    encoder: EncoderConfig = EncoderConfig(image_size=64, pool_grid=2, freeze_backbone=True)
    """The RAPL encoder's shape (as it was trained; --reward-kind rapl)."""
    policy: Path | None = None
    """Pretrained diffusion policy directory (diffusion-rwr, diffusion-dpo, dppo)."""
    pessimism: float = 0.0
    """Train on ensemble mean − k·std (diffusion-rwr, dppo, ppo on an ensemble)."""
    steps: int = 50_000
    """PPO environment steps."""
    new_policy: StatePolicyConfig = StatePolicyConfig()
    """The diffusion policy diffusion-bc creates: UNet preset, executed actions per chunk, noise scale."""
    ppo: PPOConfig = PPOConfig()
    bc: BCConfig = field(default_factory=BCConfig)
    rwr: RWRConfig = field(default_factory=RWRConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    dppo: DPPOConfig = field(default_factory=DPPOConfig)
    resume: bool = False
    """PPO: continue from the latest checkpoint in <out dir>/checkpoints (with --ppo.checkpoint-every)."""


def _need(value, flag: str, algo: str):
    if value is None:
        raise SystemExit(f"--algo {algo}: {flag} is required (see --help)")
    return value


def _embodiment(task: str, embodiment: str) -> str:
    return "Panda" if task.startswith("franka") else embodiment


def _env_id(config: TrainPolicyConfig) -> str:
    return task_spec(config.task).env_id(_embodiment(config.task, config.embodiment), config.observation)


def _layout_kwargs(layout: str | None) -> dict:
    return {} if layout is None else {"layout": layout}


def _state_reward(config: TrainPolicyConfig, store: PreferenceDataset) -> RewardFn:
    ensemble = RewardEnsemble.load(_need(config.reward, "--reward", config.algo))
    reward = ensemble.predict if config.pessimism == 0 else PessimisticReward(ensemble, config.pessimism)
    return standardized_on_pool(reward, clip_pool(store))


def _trajectories(store: PreferenceDataset):
    trajectories = [store.trajectory(i) for i in store.trajectory_ids()]
    if not trajectories:
        raise SystemExit(f"{store.path}: no trajectories (record some with `collect --task ...`)")
    return trajectories


def _rapl_wrapper(config: TrainPolicyConfig, store: PreferenceDataset):
    with_frames = [t for t in _trajectories(store) if t.frames is not None]
    if not with_frames:
        raise SystemExit(f"{store.path}: --reward-kind rapl needs trajectories with frames (`collect --frames`)")
    reference = max(with_frames, key=lambda t: float(t.rewards.sum()) if t.rewards is not None else -np.inf)
    encoder = FrameEncoder(replace(config.encoder, encoder_weights=config.reward)).eval()
    video_reward = OTVideoReward(encoder, encoder(np.asarray(reference.frames)).detach())
    return lambda env: VisualRewardWrapper(env, video_reward)


def run_train_policy(config: TrainPolicyConfig) -> str:
    """Train as configured; returns a one-line summary."""
    if config.observation == "pixels" and config.algo != "ppo":
        raise SystemExit("--observation pixels: only --algo ppo trains on pixels; diffusion policies here see the state")
    env_id, env_kwargs = _env_id(config), _layout_kwargs(config.layout)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    store = PreferenceDataset.open(config.dataset) if config.dataset is not None else None
    try:
        if config.algo == "ppo":
            return _ppo(config, env_id, env_kwargs, store)
        store = _need(store, "--dataset", config.algo)
        run_dir = config.out.parent / f"{config.out.name}_run"

        def make_env():
            return gymnasium.make(env_id, **env_kwargs)

        if config.algo == "diffusion-bc":
            demos = _trajectories(store)
            policy, report = pretrain_state_policy(demos, run_dir, config.bc, config.new_policy)
            policy.save(config.out)
            return (f"{config.out}: diffusion policy, BC on {len(demos)} trajectories for {report.steps} steps "
                    f"(last validation {report.history[-1] if report.history else '-'}; best checkpoint {report.best_checkpoint})")
        pretrained = DiffusionPolicy.load(_need(config.policy, "--policy", config.algo))
        if config.algo == "diffusion-dpo":
            policy, log = train_dpo(pretrained, labelled_pairs(store), run_dir, config.dpo)
            policy.save(config.out)
            return f"{config.out}: Diffusion-DPO on {len(store.labels())} labels; implicit accuracy {log[-1]['implicit_accuracy']:.3f}"
        reward = _state_reward(config, store)
        demos = _trajectories(store)
        if config.algo == "diffusion-rwr":
            policy, log = train_rwr(pretrained, reward, make_env, demos, run_dir, config.rwr)
        else:
            policy, log = train_dppo(pretrained, reward, make_env, run_dir, config.dppo, demos)
        policy.save(config.out)
        last = log[-1]
        return (f"{config.out}: {config.algo} for {len(log)} rounds; last rollouts: learned return "
                f"{last['learned_return']:.2f}, ground-truth return {last['gt_return']:.2f}")
    finally:
        if store is not None:
            store.close()


def _ppo(config: TrainPolicyConfig, env_id: str, env_kwargs: dict, store: PreferenceDataset | None) -> str:
    wrapper, reward_fn, kwargs = None, None, dict(env_kwargs)
    if config.reward is not None:
        store = _need(store, "--dataset", "ppo with --reward")
        if config.reward_kind == "rapl":
            wrapper = _rapl_wrapper(config, store)
            kwargs["render_mode"] = "rgb_array"
        else:
            reward_fn = _state_reward(config, store)
    checkpoints = config.out.parent / "checkpoints"
    agent = PPOAgent(env_id, config.ppo, env_kwargs=kwargs, log_dir=config.out.parent / "tensorboard", wrapper=wrapper,
                     checkpoint_dir=checkpoints if config.ppo.checkpoint_every else None)
    try:
        if config.resume and (latest := latest_checkpoint(checkpoints)) is not None:
            agent.load(latest)
        agent.train(reward_fn, max(config.steps - agent.steps_trained, 0), progress=True)
        agent.save(config.out)
    finally:
        agent.close()
    source = "the ground truth" if config.reward is None else f"the learned {config.reward_kind} reward"
    return f"{config.out}: PPO ({config.observation}) trained {agent.steps_trained} steps on {source}"


def evaluate_diffusion_policy(directory: Path, task: str, embodiment: str = "Gripper", layout: str | None = None,
                              episodes: int = 20, seed: int = 2_000_000) -> dict:
    """A saved diffusion (or DPPO) policy's task success, preference-violation rate and
    ground-truth return on episodes seeded seed, seed+1, …, next to the scripted expert's
    (quality 1, keeping the preference) on the same seeds."""
    policy = load_trained_policy(directory)
    embodiment = _embodiment(task, embodiment)
    env_id, env_kwargs = task_spec(task).env_id(embodiment, "state"), _layout_kwargs(layout)
    seeds = list(range(seed, seed + episodes))
    rollouts = run_episodes(lambda: gymnasium.make(env_id, **env_kwargs), seeds, policy.config, acting_sampler(policy, seed))
    expert = episode_outcomes(task, scripted_episodes(task, embodiment, [1.0] * episodes, seed, env_kwargs=env_kwargs))
    outcomes = episode_outcomes(task, rollouts)
    return {"policy": str(directory), "kind": "dppo" if isinstance(policy, DPPOPolicy) else "diffusion", "task": task,
            "layout": layout or "default", "episodes": episodes, **outcomes,
            "expert": expert, "success_vs_expert": outcomes["success"] / expert["success"] if expert["success"] else None}
