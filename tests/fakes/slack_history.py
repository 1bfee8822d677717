"""`FakeSlack` (tests/fakes/slack_api.py) plus `conversations.history` and `conversations.replies`, which the
durable outbox uses to find a message that may have been posted just before a crash (by the dedupe key it
carries in its metadata). Kept apart so that the shared fake stays its owner's; fold it in when convenient."""

from __future__ import annotations

from typing import Any

from tests.fakes.slack_api import FakeSlack


class HistoryFakeSlack(FakeSlack):
    def _bot_method(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method not in ("conversations.history", "conversations.replies"):
            return super()._bot_method(method, args)
        cid = self._resolve(str(args.get("channel", "")))
        ch = self.channels.get(cid or "")
        if ch is None or (ch.private and not ch.member):
            return {"ok": False, "error": "channel_not_found"}
        if not ch.member:
            return {"ok": False, "error": "not_in_channel"}
        limit = int(args.get("limit") or 100)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        messages = list(self.messages.get(ch.id, {}).values())
        if method == "conversations.history":
            # Top-level messages only, newest first (thread replies live under their root).
            picked = [m for m in messages if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
            picked.sort(key=lambda m: float(m["ts"]), reverse=True)
        else:
            root = str(args.get("ts", ""))
            if root not in self.messages.get(ch.id, {}):
                return {"ok": False, "error": "thread_not_found"}
            picked = [m for m in messages if m["ts"] == root or m.get("thread_ts") == root]
            picked.sort(key=lambda m: float(m["ts"]))
        out = []
        for m in picked[:limit]:
            doc = {k: v for k, v in m.items() if k != "metadata" and v is not None}
            if with_metadata and m.get("metadata"):
                doc["metadata"] = m["metadata"]
            out.append(doc)
        return {"ok": True, "messages": out, "has_more": len(picked) > limit,
                "response_metadata": {"next_cursor": ""}}
