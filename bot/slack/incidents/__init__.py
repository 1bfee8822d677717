"""Incidents in Slack: service.py (the pipeline as the bot runs it: renderer, routing, permissions),
listeners.py (Acknowledge / Snooze / Resolve), commands.py (`/clearml incidents`, `silences`, ...),
messages.py (the Block Kit)."""
