"""Commands from the API on `modems/{modem_id}/command`: USSD (args `code`,
or `cancel: true` to end a session a menu keeps open), restart, refresh;
each answered on the reply topic."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from smsgw_common.schemas import ModemCommand, ModemCommandReply
from smsgw_worker.errors import ModemError

from .context import WorkerContext
from .lifecycle import Lifecycle

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, ctx: WorkerContext, lifecycle: Lifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle

    def run(self, command: ModemCommand) -> None:
        ctx = self.ctx
        reply = ModemCommandReply(request_id=command.request_id, ok=False)
        try:
            if command.command == "restart":
                self.lifecycle.lost("restart", "restart requested")
                self.lifecycle.next_connect = 0.0
                reply.ok = True
            elif ctx.modem is None:
                reply.error = f"modem offline ({ctx.offline_reason})"
            elif command.command == "ussd" and command.args.get("cancel") is True:
                ctx.modem.ussd_cancel()
                reply.result = {"status": 2, "text": "", "dcs": None, "session_open": False}
                reply.ok = True
            elif command.command == "ussd":
                # A first code, or the reply to a menu (`session_open` in the
                # previous answer): the network tells them apart, not AT+CUSD.
                code = str(command.args.get("code", ""))
                reply.result = ctx.modem.ussd(code, timeout=max(ctx.settings.command_timeout, 30))
                reply.ok = True
            elif command.command == "refresh":
                self.lifecycle.refresh()
                reply.result = self.lifecycle.state().as_dict()
                reply.ok = True
        except ValueError as exc:
            reply.error = str(exc)
        except ModemError as exc:
            reply.error = str(exc)
            self.lifecycle.recover(exc)
        except SQLAlchemyError as exc:
            reply.error = "database error"
            log.warning("command %s: %s", command.command, exc)
        ctx.bus.publish(ctx.topics.command_reply(ctx.modem_id), reply.to_json(), qos=1)
