"""Shipyard: gated, versioned releases from the checkpoints of long RL runs of language models.

The core library: settings, the error tree, tiny local models, the demo RL run
and the command line. `flows/` wires its functions into Prefect flows.
"""

__version__ = "0.1.0"
