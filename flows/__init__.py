"""Prefect flows, one per file, each task a thin wrapper over a library function."""
