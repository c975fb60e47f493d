"""Eval suites (lm-eval task YAML with local data), the runner on lm-eval, gate statistics and policies."""
