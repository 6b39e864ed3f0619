"""The ceiling for bench/accept_ceiling.py: a bare Flask POST /api/sms that
parses the same JSON body and answers the seed's shape, with no auth, no
database and no broker. Served by the same gunicorn/gevent settings as the API.
"""

from __future__ import annotations

import itertools

from flask import Flask, jsonify, request

app = Flask(__name__)
_ids = itertools.count(1)


@app.post("/api/sms")
def send():
    data = request.get_json()
    return jsonify(
        {
            "message": "SMS queued for sending",
            "message_id": next(_ids),
            "recipient": data.get("recipient"),
            "status": "queued",
        }
    )
