import gymnasium
import numpy as np
import torch

from embodied_pref.experiments.tasks import task_spec
from embodied_pref.experiments.xmagical_data import scripted_episodes
from embodied_pref.gathering import TeacherGatherer
from embodied_pref.loop import LoopConfig, run_pbrl_loop
from embodied_pref.reward_nets import RewardNetConfig
from embodied_pref.reward_training import RewardTrainingConfig
from embodied_pref.rollout import rollout
from embodied_pref.store import PreferenceDataset
from embodied_pref.teachers import make_teacher
from envs.xmagical import env_id
from policies.diffusion.agent import DiffusionAgent, DiffusionAgentConfig
from policies.diffusion.configuration import DiffusionPolicyConfig
from policies.diffusion.dppo import DPPOConfig
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.runner import run_episodes
from policies.diffusion.rwr import RWRConfig
from policies.diffusion.training import TrainerConfig

LONGSTICK = env_id("Longstick", "state")  # 50-step episodes, 2-d actions


def test_lockstep_episodes_match_single_rollouts_and_sample_once_per_chunk():
    config = DiffusionPolicyConfig(state_dim=16, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, unet="tiny")
    calls, histories = [], []

    def sample(obs, envs):
        calls.append(list(envs))
        histories.append(obs["state"].numpy())
        steps = obs["state"][:, -1, :2].numpy()  # act on the robot position: depends on the state
        return np.repeat(np.tanh(-steps)[:, None], 4, axis=1)

    episodes = run_episodes(lambda: gymnasium.make(LONGSTICK), [3, 4], config, sample)
    for seed, episode in zip([3, 4], episodes):
        env = gymnasium.make(LONGSTICK)
        queue: list[np.ndarray] = []

        def policy(obs):
            if not queue:
                queue.extend([np.tanh(-obs[:2])] * 4)
            return queue.pop(0)

        reference = rollout(env, policy, seed)
        np.testing.assert_allclose(episode.observations, reference.observations, atol=1e-6)
        np.testing.assert_allclose(episode.rewards, reference.rewards, atol=1e-6)
        assert episode.metadata["eval_score"] == reference.metadata["eval_score"]
        assert episode.seed == seed and len(episode.actions) == 50
    assert len(calls) == 13 and calls[0] == [0, 1]  # ceil(50 / 4) chunks, both envs in one batch
    # The first history repeats the first observation; later ones hold the last two.
    np.testing.assert_array_equal(histories[0][:, 0], histories[0][:, 1])
    np.testing.assert_allclose(histories[1][0, 1], episodes[0].observations[4], atol=1e-6)
    np.testing.assert_allclose(histories[1][0, 0], episodes[0].observations[3], atol=1e-6)


def diffusion_agent(tmp_path, algorithm: str) -> DiffusionAgent:
    demos = scripted_episodes("Longstick", [1.0, 0.5], seed=0)
    config = DiffusionPolicyConfig(state_dim=16, action_dim=2, horizon=8, n_action_steps=4, unet="tiny",
                                   inference_steps=3)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    policy.normalizer.set_limits("action", -np.ones(2), np.ones(2))
    policy.normalizer.fit("state", np.concatenate([d.observations for d in demos]), "gaussian")
    small = TrainerConfig(batch_size=8, warmup_steps=1)
    agent_config = DiffusionAgentConfig(
        algorithm=algorithm,
        rwr=RWRConfig(episodes_per_round=2, updates_per_round=2, trainer=small, progress=False),
        dppo=DPPOConfig(episodes_per_iteration=2, epochs=1, trainer=small, progress=False))
    return DiffusionAgent(LONGSTICK, policy, demos, tmp_path / "finetune", agent_config)


def run_loop(tmp_path, algorithm: str):
    dataset = PreferenceDataset.open(tmp_path / "dataset") if (tmp_path / "dataset").exists() \
        else PreferenceDataset.create(tmp_path / "dataset")
    agent = diffusion_agent(tmp_path, algorithm)
    loop = LoopConfig(iterations=2, labels_per_iteration=8, clip_length=20, clips_per_trajectory=2,
                      rollouts_per_iteration=2, policy_steps_per_iteration=100, seed=0)
    try:
        records = run_pbrl_loop(dataset, agent, TeacherGatherer(dataset, make_teacher("oracle")), tmp_path,
                                lambda: scripted_episodes("Longstick", [0.0, 1.0], seed=5), loop,
                                RewardNetConfig(hidden_sizes=(8,), ensemble_size=2),
                                RewardTrainingConfig(max_epochs=3, progress=False),
                                violates=task_spec("xmagical-sweep").violates)
        return records, agent
    finally:
        dataset.close()


def test_the_loop_fine_tunes_a_diffusion_agent_and_resumes_without_retraining(tmp_path):
    records, agent = run_loop(tmp_path, "rwr")
    assert [r.iteration for r in records] == [0, 1]
    assert agent.rounds == 2 and len(agent.log) == 2  # 100 steps / (2 episodes x 50 steps) = 1 round per call
    assert all(r.policy_success is not None and r.policy_violation_rate == 0.0 for r in records)
    checkpoint = tmp_path / "diffusion_agent"
    assert (checkpoint / "policy" / "model.safetensors").exists() and not (tmp_path / "diffusion_agent.staged").exists()
    again, resumed = run_loop(tmp_path, "rwr")
    assert again == records and resumed.rounds == 2  # loaded, not trained again


def test_a_dppo_agent_keeps_its_fine_tuned_split_across_rounds(tmp_path):
    records, agent = run_loop(tmp_path, "dppo")
    assert len(records) == 2
    reloaded = diffusion_agent(tmp_path, "dppo")
    reloaded.load(tmp_path / "diffusion_agent")
    assert reloaded.policy.denoising == agent.policy.denoising
    a = reloaded.rollouts(1, seed=7)[0]
    b = agent.rollouts(1, seed=7)[0]
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
