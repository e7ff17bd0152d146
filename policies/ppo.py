"""PPO (stable-baselines3) trained on a learned reward, evaluated on ground truth.

`PPOAgent` implements the PbRL loop's agent protocol: `train(reward_fn, steps)` and
`rollouts(n, seed)`. Passing `reward_fn=None` trains on the environment's ground truth (the
upper-bound baseline), or on the reward of a training-env `wrapper` such as
`policies.visual_reward.VisualRewardWrapper` (PPO on pixels, paid RAPL's or RLHF's reward).

The env stack PPO trains on, bottom to top (`model.env`):

    n_envs × [gym env → Monitor (logs the ground truth) → wrapper]
    → DummyVecEnv | SubprocVecEnv          (`PPOConfig.vec_env`)
    → LearnedRewardVecEnv (`agent.venv`)   (pays `reward_fn` when given; info["gt_reward"])
    → VecNormalize(norm_obs=False)         (`PPOConfig.normalize_reward` only)
    → VecTransposeImage                    (added by SB3 for (H, W, C) image observations)

With `PPOConfig.deferred_reward` (the default), `reward_fn` is not called per step: the wrapper
records the rollout and `DeferredRewardRelabel` pays it in one batched call at the rollout's
end, straight into the rollout buffer (reward normalization replayed there), so PPO trains on
the same numbers as with per-step payment, faster.

Image observations ((H, W, C) or (C, H, W) uint8 in [0, 255]) get SB3's CnnPolicy (NatureCNN,
images scaled to [0, 1] inside the policy); `act` takes them as the env returns them.

A checkpoint is one SB3 zip; with `normalize_reward` it also holds the reward normalizer's
running statistics (member `reward_normalization.json`), so `load` restores both and training
continues from the checkpoint's `num_timesteps`. With `checkpoint_every` and a
`checkpoint_dir`, `train` saves `agent_{num_timesteps}_steps.zip` there as it goes;
`latest_checkpoint(dir)` finds the newest to resume from.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, get_args

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

from embodied_pref.data import Trajectory
from embodied_pref.reward_nets import RewardFn
from embodied_pref.rollout import ScheduledEpisodes, vector_rollouts
from policies.learned_reward import DeferredRewardRelabel, LearnedRewardVecEnv

Policy = Literal["auto", "MlpPolicy", "CnnPolicy", "MultiInputPolicy"]
VecEnvKind = Literal["dummy", "subproc"]
NATURE_CNN_MIN_SIZE = 36
"""Smallest image side SB3's NatureCNN accepts (8×8/4, 4×4/2, 3×3/1 convolutions)."""
_NORMALIZATION_MEMBER = "reward_normalization.json"
_CHECKPOINT = re.compile(r"agent_(\d+)_steps\.zip")


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (SB3 names) and how the training envs run."""

    n_envs: int = 4
    """Parallel environment copies."""
    n_steps: int = 256
    """Steps per env per update."""
    batch_size: int = 256
    """Minibatch size."""
    n_epochs: int = 10
    """Passes over each rollout buffer."""
    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount (also of the return whose std `normalize_reward` divides by)."""
    gae_lambda: float = 0.95
    """GAE λ."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    clip_range: float = 0.2
    """PPO's clip on the probability ratio."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy and value networks (after the CNN for CnnPolicy)."""
    seed: int = 0
    """Seeds networks, sampling and the envs (env i resets first with seed + i)."""
    device: str = "auto"
    """Torch device of the policy: "auto" uses CUDA when available, else "cpu", "cuda:1", ..."""
    policy: Policy = "auto"
    """SB3 policy: "auto" picks "CnnPolicy" for image observations (uint8 (H, W, C) or
    (C, H, W), sides >= 36), "MultiInputPolicy" for dict observations, else "MlpPolicy"."""
    cnn_features_dim: int = 512
    """Output width of CnnPolicy's NatureCNN (SB3's default 512; smaller trains faster)."""
    vec_env: VecEnvKind = "dummy"
    """"dummy" steps the env copies in this process; "subproc" runs one process each
    (SubprocVecEnv, forkserver start): worth it when a step or a rendered reward is slow.
    `rollouts` runs its episodes over as many copies, made the same way."""
    normalize_reward: bool = False
    """Scale rewards by a running std of the discounted return, VecNormalize(norm_obs=False,
    norm_reward=True); its statistics travel in the checkpoint."""
    deferred_reward: bool = True
    """Pay a learned `reward_fn` once per rollout, all its n_envs * n_steps steps in one call,
    instead of once per step: the same rewards, returns and advantages (up to the reward
    net's float rounding on another batch size), and the same normalization; much cheaper per
    step. False calls it every step (the rewards then pass through the env stack as they come)."""
    checkpoint_every: int = 0
    """Save a checkpoint into the agent's `checkpoint_dir` every this many env steps (0: never)."""

    def __post_init__(self) -> None:
        for name, value, choices in (("policy", self.policy, get_args(Policy)), ("vec_env", self.vec_env, get_args(VecEnvKind))):
            if value not in choices:
                raise ValueError(f"PPOConfig.{name}: expected one of {choices}, found {value!r}")
        for name in ("n_envs", "n_steps", "batch_size", "n_epochs", "cnn_features_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name}: expected an int >= 1, found {getattr(self, name)!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"PPOConfig.checkpoint_every: expected an int >= 0, found {self.checkpoint_every!r}")


def policy_for(observation_space: gym.Space) -> str:
    """The SB3 policy `PPOConfig(policy="auto")` picks for `observation_space`."""
    if isinstance(observation_space, gym.spaces.Dict):
        return "MultiInputPolicy"
    return "CnnPolicy" if is_image_space(observation_space, check_channels=False) else "MlpPolicy"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint `train` saved last into `directory` (most steps), or None."""
    directory = Path(directory)
    found = [(int(m.group(1)), p) for p in directory.glob("agent_*_steps.zip") if (m := _CHECKPOINT.fullmatch(p.name))]
    return max(found)[1] if found else None


@dataclass(frozen=True)
class _MakeEnv:
    """Makes the env from its spec, so that SubprocVecEnv workers need no registry (a worker
    never imported `envs.*`); picklable. Asks for rgb_array rendering like `make_vec_env`."""

    spec: gym.envs.registration.EnvSpec
    torch_threads: int | None = None
    """torch threads of the process the env is made in (None: leave them): one in each
    SubprocVecEnv worker, since n_envs workers already share the cores (with torch's default of
    one thread per core, 4 workers of a visual reward on 2 cores ran 10x slower)."""

    def __call__(self, **kwargs: Any) -> gym.Env:
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        try:
            return gym.make(self.spec, **{"render_mode": "rgb_array", **kwargs})
        except TypeError:
            return gym.make(self.spec, **kwargs)


@dataclass(frozen=True)
class _MakeRolloutEnv:
    """Makes one env of the VecEnv `PPOAgent.rollouts` plays on: without the training
    `wrapper`, image observations flattened as a `Trajectory` stores them, seeded episode by
    episode through `ScheduledEpisodes`; picklable."""

    make: _MakeEnv
    env_kwargs: Mapping[str, Any]

    def __call__(self) -> gym.Env:
        env = self.make(**self.env_kwargs)
        if is_image_space(env.observation_space, check_channels=False):
            env = gym.wrappers.FlattenObservation(env)
        return ScheduledEpisodes(env)


class _EpisodeSampler:
    """`PPOAgent.rollouts`' policy: episode i's actions drawn with a torch.Generator seeded
    seeds[i], one observation at a time; picklable, so that worker processes can run it."""

    def __init__(self, policy: ActorCriticPolicy, seeds: list[int], observation_shape: tuple[int, ...],
                 action_space: gym.Space, env_id: str) -> None:
        if not isinstance(policy.action_dist, (DiagGaussianDistribution, CategoricalDistribution,
                                               MultiCategoricalDistribution)):
            raise ValueError(f"PPOAgent.rollouts({env_id}): expected a diagonal Gaussian or (multi-)categorical "
                             f"action distribution, found {type(policy.action_dist).__name__}")
        self.policy, self.seeds = policy, seeds
        self.observation_shape, self.action_space = observation_shape, action_space
        self._generators: dict[int, torch.Generator] = {}

    def __call__(self, obs: np.ndarray, episodes: list[int]) -> np.ndarray:
        for i in episodes:
            if i not in self._generators:
                self._generators[i] = torch.Generator().manual_seed(self.seeds[i])
        return np.stack([self._sample(row, self._generators[i]) for row, i in zip(obs, episodes)])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_generators": {}}  # generators start where each episode starts

    @torch.no_grad()
    def _sample(self, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """One action for one observation (flattened images too), drawn with `generator` from
        the action distribution of the policy (in evaluation mode): (D,) -> (A,), clipped to a
        Box's bounds like SB3's `predict`. Reads the distribution's parameters off the policy's
        layers as `get_distribution` does, without building a torch Distribution (half the cost)."""
        policy = self.policy
        obs_tensor, _ = policy.obs_to_tensor(obs.reshape(self.observation_shape))
        latent = policy.mlp_extractor.forward_actor(policy.extract_features(obs_tensor, policy.pi_features_extractor))
        out = policy.action_net(latent).cpu()
        if isinstance(policy.action_dist, DiagGaussianDistribution):
            action = (out + policy.log_std.exp().cpu() * torch.randn(out.shape, generator=generator)).numpy()
        else:
            dims = getattr(policy.action_dist, "action_dims", [out.shape[-1]])
            action = torch.cat([torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
                                for logits in torch.split(out, list(dims), dim=-1)], dim=-1).numpy()
        action = action.reshape(self.action_space.shape)
        if isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return action


class _PeriodicCheckpoint(BaseCallback):
    """Saves the agent to `directory/agent_{num_timesteps}_steps.zip` once the step count has
    passed a multiple of `every`, between PPO updates (so the saved policy has learned from
    every step counted) and at the end of training."""

    def __init__(self, agent: PPOAgent, directory: Path, every: int) -> None:
        super().__init__()
        self.agent, self.directory, self.every = agent, directory, every
        self._next = every

    def _on_training_start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _save_if_due(self) -> None:
        steps = self.model.num_timesteps
        if steps >= self._next:
            self.agent.save(self.directory / f"agent_{steps}_steps.zip")
            self._next = (steps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        self._save_if_due()

    def _on_training_end(self) -> None:
        self._save_if_due()

    def _on_step(self) -> bool:
        return True


class PPOAgent:
    """SB3 PPO on `env_id`, its reward swapped for a learned one between training phases."""

    checkpoint_name = "agent.zip"

    def __init__(
        self,
        env_id: str,
        config: PPOConfig = PPOConfig(),
        env_kwargs: Mapping[str, Any] | None = None,
        log_dir: str | Path | None = None,
        wrapper: Callable[[gym.Env], gym.Env] | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        """`wrapper` wraps each training env (e.g. a `VisualRewardWrapper` whose reward the
        agent then trains on with `train(None, steps)`); evaluation rollouts stay unwrapped.
        With "subproc" envs it is pickled into each worker (keep its models on the CPU).
        `checkpoint_dir` receives the periodic checkpoints of `config.checkpoint_every`."""
        if config.checkpoint_every and checkpoint_dir is None:
            raise ValueError(f"PPOConfig.checkpoint_every={config.checkpoint_every}: expected a checkpoint_dir, found None")
        self.env_id, self.config = env_id, config
        self.env_kwargs = dict(env_kwargs or {})
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        subproc = config.vec_env == "subproc"
        venv = make_vec_env(_MakeEnv(gym.spec(env_id), torch_threads=1 if subproc else None), n_envs=config.n_envs,
                            seed=config.seed, env_kwargs=self.env_kwargs, wrapper_class=wrapper,
                            vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv)
        self.venv = LearnedRewardVecEnv(venv)
        """Where `train` sets the reward; below the normalizer."""
        self.train_env: VecEnv = self.venv
        if config.normalize_reward:
            self.train_env = VecNormalize(self.venv, norm_obs=False, norm_reward=True, gamma=config.gamma)
        policy = policy_for(self.venv.observation_space) if config.policy == "auto" else config.policy
        policy_kwargs: dict[str, Any] = {"net_arch": list(config.net_arch)}
        if policy == "CnnPolicy":
            _check_cnn_input(env_id, self.venv.observation_space)
            policy_kwargs["features_extractor_kwargs"] = {"features_dim": config.cnn_features_dim}
        self.model = PPO(
            policy,
            self.train_env,
            n_steps=config.n_steps,
            batch_size=config.batch_size,
            n_epochs=config.n_epochs,
            learning_rate=config.learning_rate,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
            ent_coef=config.ent_coef,
            clip_range=config.clip_range,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            device=config.device,
            tensorboard_log=None if log_dir is None else str(log_dir),
            verbose=0,
        )
        _log_nowhere_without_log_dir(self.model)
        self.steps_trained = 0
        self._rollout_env: VecEnv | None = None

    def train(self, reward_fn: RewardFn | None, steps: int, progress: bool = False) -> None:
        """Continue training for `steps` env steps on `reward_fn` (None: the training envs'
        reward, i.e. ground truth or the wrapper's)."""
        self.venv.reward_fn = reward_fn
        self.venv.deferred = self.config.deferred_reward and reward_fn is not None
        callbacks: list[BaseCallback] = []
        if self.venv.deferred:  # first: later callbacks see the rollout paid
            normalizer = self.train_env if isinstance(self.train_env, VecNormalize) else None
            callbacks.append(DeferredRewardRelabel(self.venv, normalizer))
        if self.config.checkpoint_every:
            callbacks.append(_PeriodicCheckpoint(self, self.checkpoint_dir, self.config.checkpoint_every))
        self.model.learn(
            total_timesteps=steps,
            callback=callbacks,
            reset_num_timesteps=self.steps_trained == 0,
            progress_bar=progress,
            tb_log_name="ppo",
        )
        self.steps_trained += steps

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """obs: one observation as the env returns it, e.g. (H, W, 3) uint8 -> action (A,)."""
        action, _ = self.model.predict(obs, deterministic=deterministic)
        return action

    def rollouts(self, n: int, seed: int, record_frames: bool = False) -> list[Trajectory]:
        """`n` episodes of the current (stochastic) policy, seeds seed .. seed+n-1, played over
        `config.n_envs` env copies (`config.vec_env`, made once and kept until `close`).
        Episode i samples its actions with a torch.Generator seeded seed+i and the policy sees
        its observations one at a time (a batched forward pass rounds differently), so the
        episodes are the same for any `n_envs` and either `vec_env`. With subprocess workers
        and a policy on the CPU, each worker runs a copy of the policy and plays its episodes
        on its own. Image observations are stored flattened: `observations` (T+1, H·W·C) float32."""
        self.model.policy.set_training_mode(False)
        sampler = _EpisodeSampler(self.model.policy, [seed + i for i in range(n)], self.venv.observation_space.shape,
                                  self.venv.action_space, self.env_id)
        return vector_rollouts(self._rollout_venv(), sampler, sampler.seeds, record_frames=record_frames,
                               metadata={"policy": "ppo", "steps_trained": self.steps_trained},
                               in_workers=self.config.vec_env == "subproc" and self.model.device.type == "cpu")

    def _rollout_venv(self) -> VecEnv:
        if self._rollout_env is None:
            subproc = self.config.vec_env == "subproc"
            make = _MakeRolloutEnv(_MakeEnv(gym.spec(self.env_id), torch_threads=1 if subproc else None),
                                   self.env_kwargs)
            self._rollout_env = (SubprocVecEnv if subproc else DummyVecEnv)([make] * self.config.n_envs)
        return self._rollout_env

    def save(self, path: str | Path) -> None:
        """Writes the SB3 zip at `path` (".zip" added when it has no suffix), with the reward
        normalizer's statistics when there is one."""
        path = _zip_path(path)
        self.model.save(str(path))
        if isinstance(self.train_env, VecNormalize):
            rms = self.train_env.ret_rms
            stats = {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count),
                     "gamma": self.train_env.gamma, "clip_reward": self.train_env.clip_reward,
                     "epsilon": self.train_env.epsilon}
            with zipfile.ZipFile(path, "a") as archive:
                archive.writestr(_NORMALIZATION_MEMBER, json.dumps(stats))

    def load(self, path: str | Path) -> None:
        """Restores a checkpoint; training then continues from its `num_timesteps`. An agent
        without `normalize_reward` ignores saved statistics (it only acts or trains unscaled)."""
        path = _zip_path(path)
        with zipfile.ZipFile(path) as archive:
            saved = archive.namelist()
            stats = json.loads(archive.read(_NORMALIZATION_MEMBER)) if _NORMALIZATION_MEMBER in saved else None
        if isinstance(self.train_env, VecNormalize):
            if stats is None:
                raise ValueError(f"{path}: expected reward normalization statistics ({_NORMALIZATION_MEMBER}) "
                                 "for an agent with PPOConfig(normalize_reward=True); the checkpoint has none")
            rms = self.train_env.ret_rms
            rms.mean, rms.var, rms.count = np.array(stats["mean"]), np.array(stats["var"]), stats["count"]
            self.train_env.returns = np.zeros(self.train_env.num_envs)
        self.model = PPO.load(str(path), env=self.train_env, device=self.config.device)
        _log_nowhere_without_log_dir(self.model)
        self.steps_trained = self.model.num_timesteps

    def close(self) -> None:
        """Closes the training and rollout envs (ends SubprocVecEnv workers)."""
        self.train_env.close()
        if self._rollout_env is not None:
            self._rollout_env.close()
            self._rollout_env = None


def _log_nowhere_without_log_dir(model: PPO) -> None:
    """Without a logger of its own or a tensorboard_log, SB3 makes an empty SB3-<time> folder
    in the temp directory on every `learn`; a logger that writes nowhere leaves it clean."""
    if model.tensorboard_log is None:
        model.set_logger(Logger(folder=None, output_formats=[]))


def _zip_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix else path.with_suffix(".zip")


def _check_cnn_input(env_id: str, space: gym.Space) -> None:
    shape = space.shape
    sides = shape[1:] if is_image_space_channels_first(space) else shape[:2]
    if min(sides) < NATURE_CNN_MIN_SIZE:
        raise ValueError(f"{env_id}: CnnPolicy (NatureCNN) expects images of at least {NATURE_CNN_MIN_SIZE}x"
                         f"{NATURE_CNN_MIN_SIZE} pixels, found observation shape {shape}; make the env with a "
                         "larger pixel_size")
