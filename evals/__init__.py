"""Eval suites (lm-eval task YAML with local data), the runner on lm-eval, the gate, its policy and statistics."""
