"""Shipyard: gated, versioned releases from the checkpoints of long RL runs of language models.

The package by stage of the pipeline; each imports only what is listed below it (tests/test_layout.py):

    shipyard/*.py     the core: settings, profiles, errors, digests, caches, progress, the checkpoint and event
                      vocabulary (`checkpoints`, `events`); imports no stage
    intake/           list a run, apply each framework's layout, snapshot, convert, validate, select   (core)
    posttraining/     recipes of preference and safety stages, trained with TRL into candidates        (core)
    registry/         the ledger, stores, publishing, mirrors, the signed approval policy, the doors    (core)
    evals/ (top)      eval suites on lm-eval, the gate and its policy, statistics          (core, posttraining)
    safety/ (top)     the refusal judge                                                    (core, posttraining)
    orchestration/    the pipeline (the one composition of the stages), the watcher loop, the gate run, and
    flows/ (top)      what runs them on Prefect                                                 (every stage)
    app/              the command line (one module per stage) and the release dashboard (routers)
    demo/             the demo: its RL run, task, data, suites, policy and profile; plugs in by entry points

The top-level flows/, evals/ and safety/ are the subpackages shipyard.flows, shipyard.evals and shipyard.safety.
"""

__version__ = "0.1.0"
