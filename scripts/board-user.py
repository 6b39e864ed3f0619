#!/usr/bin/env python3
"""Give a seed board its own broker user, or take it away (docs/boards.md).

    scripts/board-user.py add +4915112345678       # prints the new password once
    scripts/board-user.py add +4915112345678 --password-file pw.txt
    scripts/board-user.py remove +4915112345678
    scripts/board-user.py list

The user name is the SIM's number without '+' (what the seed's send topic
carries), so the broker's ACL confines the board to `sms/send/<its number>`
and the two topics it publishes. Users live in secrets/boards/passwd (or
--file), one `number:hash` line each, hashed as mosquitto_passwd hashes
(PBKDF2-SHA512, `$7$`), so no password is ever stored in clear. The broker
reads the file when it starts: restart it after a change
(`docker compose restart mosquitto`). Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "secrets" / "boards" / "passwd"
ITERATIONS = 101  # mosquitto_passwd's own default for $7$


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def username(number: str) -> str:
    digits = "".join(ch for ch in number if ch.isdigit())
    if number.strip().startswith("00"):
        digits = digits[2:]
    if not 6 <= len(digits) <= 15 or any(ch not in "+0123456789 -." for ch in number.strip()):
        raise SystemExit(f"board-user: {number!r} is not a phone number in E.164 (+ and 6 to 15 digits)")
    return digits


def read(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, hashed = line.partition(":")
                users[name] = hashed
    return users


def write(path: Path, users: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The broker's entrypoint reads it as root and copies it into its own files.
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{name}:{hashed}\n" for name, hashed in sorted(users.items()))
    # Hashes only, but still nobody else's business.
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("add", "remove", "list"))
    parser.add_argument("number", nargs="?")
    parser.add_argument("--password-file", help="read the password from this file instead of generating one")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help=f"the boards' password file ({DEFAULT_FILE})")
    args = parser.parse_args(argv)
    users = read(args.file)
    if args.action == "list":
        print("\n".join(f"+{name}" for name in sorted(users)))
        return 0
    if not args.number:
        parser.error("a number is required")
    name = username(args.number)
    if args.action == "remove":
        if users.pop(name, None) is None:
            print(f"board-user: no board user +{name}", file=sys.stderr)
            return 1
        write(args.file, users)
        print(f"removed board +{name}; restart the broker to apply")
        return 0
    if args.password_file:
        password = Path(args.password_file).read_text().strip()
        if len(password) < 16:
            print("board-user: a board password needs at least 16 characters", file=sys.stderr)
            return 2
    else:
        password = secrets.token_urlsafe(18)
    replaced = name in users
    users[name] = mosquitto_hash(password)
    write(args.file, users)
    print(f"{'replaced' if replaced else 'added'} board +{name} in {args.file}; restart the broker to apply")
    if not args.password_file:
        # Shown once: only its hash is kept.
        print(f"MQTT user: {name}\nMQTT password: {password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
