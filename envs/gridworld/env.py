"""The delivery domain as a gymnasium environment (for rollouts; planning uses the arrays of
`DeliveryMDP` directly)."""

from __future__ import annotations

from typing import Any

import gymnasium

from envs.gridworld.delivery import DeliveryMDP, load_shared_mdp


class DeliveryEnv(gymnasium.Env):
    """Observation: the state index (Discrete(S)); action: Discrete(4), see `ACTIONS`.

    Episodes start in a uniformly drawn non-absorbing cell and terminate on entering a goal or
    sheep. The reward is the true w · φ(s, a); `info["features"]` carries φ(s, a) (6,)."""

    metadata = {"render_modes": []}

    def __init__(self, mdp: DeliveryMDP | None = None, mdp_id: int = 100) -> None:
        self.mdp = mdp if mdp is not None else load_shared_mdp(mdp_id)
        self.observation_space = gymnasium.spaces.Discrete(self.mdp.n_states)
        self.action_space = gymnasium.spaces.Discrete(self.mdp.n_actions)
        self._state = int(self.mdp.start_states[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._state = int(self.np_random.choice(self.mdp.start_states))
        return self._state, {"cell": tuple(int(c) for c in self.mdp.cell(self._state))}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"DeliveryEnv.step: expected an action in 0..{self.mdp.n_actions - 1}, found {action!r}")
        state, action = self._state, int(action)
        self._state = int(self.mdp.next_state[state, action])
        info = {"features": self.mdp.features[state, action].copy(),
                "cell": tuple(int(c) for c in self.mdp.cell(self._state))}
        return self._state, float(self.mdp.reward[state, action]), bool(self.mdp.done[state, action]), False, info


ENV_ID = "embodied_pref/Delivery-v0"
"""Registered id; pass `mdp_id=` (100..149) or `mdp=` to `gymnasium.make`."""

if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="envs.gridworld.env:DeliveryEnv", max_episode_steps=1000)

