"""The person-facing app: the command line (one module per stage) and the release dashboard (routers)."""
