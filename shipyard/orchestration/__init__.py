"""Orchestration: the pipeline (the one composition of the stages), the watcher loop, the gate run, and what
runs them on Prefect."""
