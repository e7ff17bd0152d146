"""embodied-pref: preference-based reward learning for embodied and game agents.

The core package is domain-free: data model and dataset store, preference models, teachers,
reward models and their training, query selection, metrics and the PbRL loop. Environment
suites live in `envs/`, policy learners in `policies/`, the labeling app in `human_ui/`.
"""

# Creating the first torch optimizer imports torch._dynamo, which loads triton's bundled LLVM.
# If MuJoCo's headless (EGL, Mesa llvmpipe) renderer has loaded Mesa's LLVM before that, the
# process segfaults. Loading triton's first avoids the clash, so it happens on import here.
import torch._dynamo  # noqa: F401

__version__ = "0.1.0"
