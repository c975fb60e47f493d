"""Shipyard: gated, versioned releases from the checkpoints of long RL runs of language models.

The core library, grouped by the stage of the pipeline each part serves:

    intake/          list a run, apply each framework's layout, snapshot, convert, validate, select
    posttraining/    recipes of preference and safety stages, trained with TRL into candidates
    registry/        the ledger, stores, publishing, mirrors, the signed policy, approvals and their doors
    orchestration/   the pipeline (the one composition of the stages) and what runs it on Prefect
    app/             the command line and the release dashboard
    demo/            the demo's own parts: its RL run, arithmetic task, tiny models, data, `shipyard demo`

Beside them, what every stage shares: settings, profiles, the error tree, digests, caches, progress.
Evaluation and the gate live in `evals/`, safety data and the refusal judge in `safety/`, the Prefect
flows in `flows/`.
"""

__version__ = "0.1.0"
