"""What the tests stand on (imported as `support`: pytest.ini puts tests/ on
sys.path). Each tier's conftest.py is a short list of fixtures over these.

- services.py   per-package resources: a migrated Postgres database, an MQTT
                prefix, a Redis database held by a lock (never someone else's
                flushed); the fixtures every conftest imports
- waits.py      `wait_until` (the one wait: bounded, says what it waited for
                and what it last saw) and `holds_for` (nothing happens over a
                window that is itself the behaviour under test)
- processes.py  service processes: bounded start-up on a readiness check,
                clean stop; free ports
- api.py        the API's test environment, personas with keys, SIM rows,
                an HTTP client, a recording Socket.IO client
- mqtt.py       a Listener ready on SUBACK, a Publisher of the documented
                payloads, waiting for a Bus's subscriptions to be active
- pipeline.py   who leads, a webhook receiver, rows a worker would write
- workers.py    modem workers on emulators, as processes or a thread
- modems.py     a bare AT client on an emulator's pty
- browser.py    Chromium pages watched for dialogs and errors

tests/shared_fixtures.py and the tiers' helper modules (api_support.py,
worker_harness.py, dashboard/support.py, ...) re-export from here under
their old names.
"""
