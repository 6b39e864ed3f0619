"""The backup/restore drill of docs/deployment.md, on the running stack:
back up, send one more SMS, restore, and the newer SMS is gone while the older
one and the gateway itself are back."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from .support import ROOT, message, online_sims, wait_for

pytestmark = pytest.mark.stack


def run_script(stack, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COMPOSE_PROJECT_NAME=stack.project, COMPOSE_ENV_FILES=stack.env_file, **extra_env)
    return subprocess.run(
        [str(ROOT / "scripts" / args[0]), *args[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def psql(stack, sql: str) -> str:
    out = stack.exec(
        "postgres", "sh", "-c", 'exec psql -XAtq -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$0"', sql
    )
    return out.stdout.strip()


def send(api, text: str) -> int:
    resp = api.post(f"{api.base}/api/sms", json={"recipient": "+4915112340000", "message": text}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["message_id"]


def test_it_restores_a_backup_and_forgets_what_came_after_it(stack, api, tmp_path):
    wait_for(lambda: len(online_sims(api)) >= 2, 90, what="both demo SIMs online")
    before = send(api, f"before the backup {uuid.uuid4().hex[:8]}")
    wait_for(lambda: message(api, before)["status"] == "delivered", 60, what="the first SMS delivered")

    backup = run_script(stack, "backup.sh", BACKUP_DIR=str(tmp_path))
    assert backup.returncode == 0, backup.stderr
    dumps = list(tmp_path.glob("smsgw-*.dump"))
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0

    after = send(api, f"after the backup {uuid.uuid4().hex[:8]}")
    # What a later migration would add, tied to an existing table: the restore
    # must take the database back to the dump's schema, not keep it alongside.
    psql(stack, "CREATE TABLE added_after_backup (message_id integer REFERENCES messages(id))")

    restore = run_script(stack, "restore.sh", str(dumps[0]), "--yes")
    assert restore.returncode == 0, restore.stdout + restore.stderr

    def api_ready():
        try:
            return api.get(f"{api.base}/readyz", timeout=5).status_code == 200
        except Exception:
            return False

    wait_for(api_ready, 120, what="the API ready after the restore")
    assert message(api, before)["status"] == "delivered"
    gone = api.get(f"{api.base}/api/sms/{after}", timeout=10)
    assert gone.status_code == 404
    assert psql(stack, "SELECT to_regclass('public.added_after_backup') IS NULL") == "t"
    wait_for(lambda: len(online_sims(api)) >= 2, 120, what="both demo SIMs online after the restore")


def test_it_refuses_to_restore_a_file_that_is_not_a_dump(stack, tmp_path):
    bogus = tmp_path / "not-a-dump.dump"
    bogus.write_text("this is not a pg_dump archive\n")
    result = run_script(stack, "restore.sh", str(bogus), "--yes")
    assert result.returncode != 0
    assert "not a pg_dump custom-format archive" in result.stderr
