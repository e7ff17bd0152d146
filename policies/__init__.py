"""Policy learners that train on learned rewards (stable-baselines3 PPO)."""
