"""The modem worker: one modem, Postgres as the truth, MQTT as the fast path.

Where each behaviour lives:

- loop.py       `Worker`: the one thread that runs every step, its timers and its queue
- events.py     what the serial reader and MQTT threads put on that queue
- context.py    `WorkerContext`: settings, modem, database, bus, the SIM; publishing outcomes
- lifecycle.py  opening and reopening the port, health and state, recovery
- registry.py   the modem's and its SIM's rows, written as the modem comes up (with its node and site)
- outbox.py     claiming, sending segments, recording send outcomes and retries
- inbox.py      unsolicited lines, received SMS (stored or direct), reassembly, duplicates
- reports.py    status reports matched to parts, messages settled as delivered or failed
- commands.py   USSD, restart and refresh requested over MQTT
- sweep.py      expired leases, expired messages, incomplete inbound SMS
- journal.py    the outcome journal: what the modem said, durable before Postgres hears of it
- replay.py     on start and after a database outage: the journal applied, own claims settled

Which +CMS/+CME codes are permanent, transient or a SIM problem: errors.py.
"""

from .loop import Worker

__all__ = ["Worker"]
