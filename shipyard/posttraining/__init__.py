"""Post-training: recipes of preference and safety stages, run with TRL into release candidates."""
