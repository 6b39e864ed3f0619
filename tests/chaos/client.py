"""The tier's API client: sends messages with unique texts and
Idempotency-Keys at a steady pace, and retries a send that met an error or
a timeout with the same key, as a careful client would, within bounds (a
number of attempts and a time per message).

A message counts as acknowledged only when the API answered 200 with a
message id; one that gets 4xx other than 429 is a client mistake and is
kept apart, never retried.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

RETRY_STATUSES = {429, 500, 502, 503, 504}
REQUEST_TIMEOUT = 10.0  # one attempt
MESSAGE_BUDGET = 90.0  # all attempts of one message
RETRY_PAUSE = 0.5  # between attempts of one message: a client's backoff, the behaviour under test


@dataclass
class Ack:
    index: int
    text: str
    key: str
    message_id: int | None = None
    first_try: float = 0.0  # time.time()
    acked_at: float | None = None
    attempts: int = 0
    refused: str | None = None  # a 4xx answer, or why the client gave up


def recipient(i: int) -> str:
    return f"+4917{i:08d}"


class Client:
    def __init__(self, base: str, api_key: str, tag: str):
        self.base, self.api_key, self.tag = base, api_key, tag
        self.token = secrets.token_hex(3)  # unique across runs of one scenario
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["X-API-Key"] = self.api_key
        return s

    def text(self, i: int) -> str:
        return f"chaos {self.tag} {self.token} #{i:04d}"

    def send_one(self, i: int) -> Ack:
        ack = Ack(i, self.text(i), str(uuid.uuid4()), first_try=time.time())
        body = {"recipient": recipient(i), "message": ack.text}
        headers = {"Idempotency-Key": ack.key}
        deadline = time.monotonic() + MESSAGE_BUDGET
        while time.monotonic() < deadline:
            ack.attempts += 1
            try:
                resp = self._session().post(self.base + "/api/sms", json=body, headers=headers, timeout=REQUEST_TIMEOUT)
            except requests.RequestException:
                self._local.session = None  # a fresh connection after a reset
                time.sleep(RETRY_PAUSE)
                continue
            if resp.status_code == 200:
                ack.message_id = resp.json()["message_id"]
                ack.acked_at = time.time()
                return ack
            if resp.status_code not in RETRY_STATUSES:
                ack.refused = f"{resp.status_code} {resp.text[:200]}"
                return ack
            time.sleep(RETRY_PAUSE)
        ack.refused = f"no answer within {MESSAGE_BUDGET:g} s ({ack.attempts} attempts)"
        return ack

    def send_paced(self, count: int, rate: float, threads: int = 8) -> list[Ack]:
        """Message i is sent no earlier than i / rate seconds after the start;
        a few threads, so one message retrying does not hold the others."""
        start = time.monotonic()

        def paced(i: int) -> Ack:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the client
            return self.send_one(i)

        with ThreadPoolExecutor(threads, thread_name_prefix=f"chaos-client-{self.tag}") as pool:
            return list(pool.map(paced, range(count)))


class Background:
    """Run the paced client in a thread while the scenario injects its fault."""

    def __init__(self, client: Client, count: int, rate: float):
        self.result: list[Ack] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client, count, rate), daemon=True)
        self._thread.start()

    def _run(self, client: Client, count: int, rate: float) -> None:
        try:
            self.result = client.send_paced(count, rate)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self, timeout: float) -> list[Ack]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the client did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result
