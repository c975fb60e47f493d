"""The demo's own parts: its RL run, its arithmetic task, tiny local models, data, and `shipyard demo`."""
