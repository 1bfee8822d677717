"""Pure builders of Slack messages (slack_sdk Block Kit models) from findings and look-up results."""

from bot.slack.messages.common import MAX_BLOCKS, SlackMessage

__all__ = ["MAX_BLOCKS", "SlackMessage"]
