"""Action buttons in Slack: listeners.py (clicks: verify, authorize, confirm, run, audit), buttons.py (which
buttons a message gets, signed), messages.py (confirm dialogs and outcomes), verify_hashes.py (the dataset
"Verify file hashes" button)."""
