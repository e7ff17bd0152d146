"""embodied-pref: preference-based reward learning for embodied and game agents.

The core package is domain-free: data model and dataset store, preference models, teachers,
reward models and their training, query selection, metrics and the PbRL loop. Environment
suites live in `envs/`, policy learners in `policies/`, the labeling app in `human_ui/`.
"""

__version__ = "0.1.0"
