"""Import before x-magical or crafter: both build on the unmaintained gym 0.26, whose
import-time notice (printed by gym_notices) says to move to gymnasium, which our adapters do.
Clearing it keeps the notice out of every command's output."""

try:
    import gym_notices.notices as _gym_notices

    _gym_notices.notices.clear()
except ImportError:
    pass
