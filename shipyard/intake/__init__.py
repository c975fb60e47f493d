"""Intake: list a run, apply each framework's layout, snapshot, convert, validate and select checkpoints."""
