"""clearml-chatops: a Slack bot that watches a ClearML server."""

__version__ = "0.1.0"
