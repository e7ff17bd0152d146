"""Process-wide shims that must run before `xmagical` (or pygame) is imported."""

import collections
import collections.abc
import os
import sys
import types

# x-magical 0.0.4 still spells `collections.Sequence`, which Python 3.10 removed.
if not hasattr(collections, "Sequence"):
    collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]

# x-magical draws on an off-screen pygame surface; without a display pygame must not
# try to open a window (headless machines, CI).
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# pygame prints a banner on import otherwise.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import envs.legacy_gym  # noqa: E402,F401  (x-magical needs gym 0.26 for its base class only)

# pymunk 5 prints the path of its chipmunk library on import unless `pymunkoptions` says not to.
sys.modules.setdefault("pymunkoptions", types.SimpleNamespace(options={"debug": False}))
