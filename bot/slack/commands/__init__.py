"""The slash command's subcommands: the read-only look-ups behind status, agents, queues, task, diff and dataset."""
