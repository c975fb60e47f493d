"""Orchestration: the pipeline's one composition of the stages, and what runs it on Prefect."""
