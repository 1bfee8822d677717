"""The playbook engine: playbook schema, check registry, per-run snapshot, runner and the finding contract."""
