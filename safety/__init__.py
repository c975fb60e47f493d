"""Safety: the refusal judge, used by safety measurements and by the demo's refusal tasks."""
