"""The demo's one error, a branch of the core tree's Conflict group that only the demo raises."""

from shipyard.errors import Conflict


class DemoRunError(Conflict):
    """The demo RL run cannot start or continue (for example, its output directory is taken)."""
