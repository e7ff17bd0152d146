"""The delivery domain of Knox et al. as a tabular MDP: cells with reward features, deterministic
moves, absorbing terminals, γ = 0.999; the papers' 50 shared MDPs and new random ones; exact
planning (V*, Q*, A*, policy evaluation) and the papers' scaled-return metric.

Importing this package registers the gymnasium id `embodied_pref/Delivery-v0` (`DeliveryEnv`).
"""

from envs.gridworld.delivery import (
    ACTIONS,
    CELL_NAMES,
    GAMMA,
    REWARD_FEATURES,
    SHARED_MDP_IDS,
    DeliveryMDP,
    action_index,
    load_mdp,
    load_segment_pairs,
    load_shared_mdp,
    load_shared_transitions,
    random_mdp,
    random_reward_weights,
    shared_data_dir,
)
from envs.gridworld.env import ENV_ID, DeliveryEnv
from envs.gridworld.planning import (
    OptimalSolution,
    ReturnScale,
    policy_evaluation,
    return_scale,
    scaled_return,
    solve_optimal,
    uniform_policy,
    value_iteration,
)

__all__ = [
    "ACTIONS",
    "CELL_NAMES",
    "GAMMA",
    "REWARD_FEATURES",
    "SHARED_MDP_IDS",
    "DeliveryEnv",
    "DeliveryMDP",
    "ENV_ID",
    "OptimalSolution",
    "ReturnScale",
    "action_index",
    "load_mdp",
    "load_segment_pairs",
    "load_shared_mdp",
    "load_shared_transitions",
    "policy_evaluation",
    "random_mdp",
    "random_reward_weights",
    "return_scale",
    "scaled_return",
    "shared_data_dir",
    "solve_optimal",
    "uniform_policy",
    "value_iteration",
]
