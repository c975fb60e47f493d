"""The person-facing app: the command line and the release dashboard."""
