"""The release dashboard: server-rendered pages over the ledger and the Prefect API, and an approval door.

`app.create_app` builds a FastAPI app that keeps no database: every request
reads the ledger (local or S3) afresh, so it shows runs as they go. Approving
and rejecting go through `shipyard.registry.doors`, like the CLI: one ledger event, and
the waiting Prefect approval run resumed. Logins are per approver with tokens
stored hashed in the config (`auth.py`); every form carries a CSRF token.
Plots are SVG drawn on the server (`plots.py`): no JavaScript, no internet.
"""
