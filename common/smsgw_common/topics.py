"""MQTT topic builders (docs/architecture.md, "MQTT topics"). Nobody spells a topic by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass

# An id, or a node's or a site's name: no MQTT wildcard or separator, and
# safe in a URL, a log line and a label. fullmatch: `$` alone lets a trailing
# newline through.
NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
NAME = re.compile(NAME_PATTERN)


def check_id(value: str) -> str:
    """Topic segments must not carry MQTT wildcards or separators."""
    if not NAME.fullmatch(value):
        raise ValueError(f"invalid id for an MQTT topic: {value!r}")
    return value


@dataclass(frozen=True)
class Topics:
    prefix: str = "smsgw/"

    def outbox(self, modem_id: str) -> str:
        return f"{self.prefix}modems/{check_id(modem_id)}/outbox"

    def state(self, modem_id: str) -> str:
        return f"{self.prefix}modems/{check_id(modem_id)}/state"

    def command(self, modem_id: str) -> str:
        return f"{self.prefix}modems/{check_id(modem_id)}/command"

    def command_reply(self, modem_id: str) -> str:
        return f"{self.prefix}modems/{check_id(modem_id)}/command/reply"

    def message_events(self) -> str:
        return f"{self.prefix}events/messages"

    def stats(self, source: str) -> str:
        return f"{self.prefix}stats/{check_id(source)}"

    # Subscriptions
    def all_states(self) -> str:
        return f"{self.prefix}modems/+/state"

    def all_command_replies(self) -> str:
        return f"{self.prefix}modems/+/command/reply"

    def all_stats(self) -> str:
        return f"{self.prefix}stats/+"

    def modem_id_of(self, topic: str) -> str | None:
        """The modem id in smsgw/modems/{id}/..., or None for other topics."""
        head = f"{self.prefix}modems/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/", 1)
        return rest[0] or None
