"""Safety post-training recipe and data, safety eval suites, the refusal judge and safety gates."""
