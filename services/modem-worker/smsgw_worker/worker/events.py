"""What the serial reader and the MQTT client put on the loop's queue.

Those threads only enqueue; the loop (loop.py) acts on each item in order.
`generation` names the serial link an item came from: after a reconnect,
command-related items of the old link are stale and dropped; a +CMT/+CDS
read from the old link is still recorded (it is in the journal), only not
acknowledged on a link that is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsgw_common.schemas import ModemCommand
from smsgw_worker.atmodem import ModemEvent

from .journal import Entry


@dataclass(frozen=True)
class Unsolicited:
    """A line the modem sent on its own (+CMTI, +CDSI, +CPIN, ...)."""

    event: ModemEvent
    generation: int


@dataclass(frozen=True)
class LinkFailed:
    """The serial link died under the reader thread."""

    error: BaseException
    generation: int


@dataclass(frozen=True)
class DirectPending:
    """A +CMT/+CDS waits in `WorkerContext.direct` for its AT+CNMA."""


@dataclass(frozen=True)
class DirectDelivery:
    """A +CMT/+CDS, journaled by the reader thread as it came (`entry`;
    None if the journal could not be written); acknowledged with AT+CNMA
    (when AT+CSMS=1 asks for it) once recorded, on the link it came on."""

    event: ModemEvent
    generation: int
    entry: Entry | None = None


@dataclass(frozen=True)
class Wakeup:
    """The API queued a message for this modem (MQTT outbox topic)."""

    message_id: int


@dataclass(frozen=True)
class CommandReceived:
    command: ModemCommand


@dataclass(frozen=True)
class MqttConnected:
    pass


@dataclass(frozen=True)
class Stop:
    pass


LoopEvent = Unsolicited | LinkFailed | DirectPending | Wakeup | CommandReceived | MqttConnected | Stop
