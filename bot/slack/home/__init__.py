"""The App Home tab: listeners.py (Bolt), service.py (gather, render, publish, buttons), state.py (what it
shows, as plain data), messages.py (the Block Kit)."""
