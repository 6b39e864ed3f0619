"""The OpenAPI document describes exactly the routes the app serves,
including those other modules register."""
from __future__ import annotations

import re


def test_the_openapi_document_matches_the_url_map(client, app):
    doc = client.get("/api/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/socket.io"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]\w*)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served - documented == set(), "routes without documentation"
    assert documented - served == set(), "documented routes that do not exist"


def test_every_operation_has_a_summary_and_an_error_response(client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (path, method)
            assert "default" in op["responses"] or any(code.startswith("4") for code in op["responses"]), (path, method)
            for name in re.findall(r"{(\w+)}", path):
                assert name in [p["name"] for p in op.get("parameters", []) if p["in"] == "path"], (path, name)
