"""The `/clearml` slash command: listeners.py (ack, parse, hand over), parsing.py (the command language),
jobs.py (the slow half on the work pool), replies.py (the conversation with the user), lookups.py (the read-only
look-ups), messages.py and help.py (their Block Kit)."""
