"""The demo: its RL run, arithmetic task, tiny local models, data, suites, gate policy and profile, and
`shipyard demo`. It plugs into the core by entry points (`profile`, `cli`); nothing else imports it."""
