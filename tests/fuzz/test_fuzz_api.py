"""Schemathesis over the served OpenAPI document, as every role: no response
is a 5xx, and every response is one the document describes (status code,
content type, body schema).

Bounded for CI: FUZZ_MAX_EXAMPLES examples per operation, role and mode
(schema-valid and schema-violating requests), derandomized (the same
requests every run), no shrinking. Failures are collected, not raised at
the first one, so one run reports them all; the summary line gives the
figures (operations, examples, 5xx, schema violations).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "20"))
# The whole tier must fit CI: past this, the remaining operations are not
# fuzzed and the test fails saying so (raise the budget or lower the examples).
BUDGET_SECONDS = float(os.environ.get("FUZZ_BUDGET_SECONDS", "330"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The admin goes last: its examples may delete users or revoke keys the others use.
ROLES = ("viewer", "user", "admin")


@dataclass
class Tally:
    operations: set = field(default_factory=set)
    examples: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list = field(default_factory=list)
    violations: list = field(default_factory=list)

    def line(self) -> str:
        return (
            f"fuzz summary: operations={len(self.operations)} examples={self.examples} "
            f"5xx={len(self.server_errors)} schema_violations={len(self.violations)} "
            f"statuses={dict(sorted(self.statuses.items()))}"
        )


def _describe(case, response, exc: BaseException | None = None) -> str:
    text = response.text[:300] if response is not None else ""
    what = "; ".join(str(e).splitlines()[0] for e in getattr(exc, "exceptions", [exc] if exc else []))
    return f"{case.operation.label} -> {response.status_code}: {what} {text!r}\n    {case.as_curl_command()[:600]}"


def _fuzz_operation(operation, base: str, headers: dict, mode: GenerationMode, tally: Tally, http) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        tally.examples += 1
        tally.operations.add(operation.label)
        try:
            response = case.call(base_url=base, session=http, headers=headers, timeout=15)
        except requests.RequestException as exc:
            tally.server_errors.append(f"{operation.label}: no answer ({exc})")
            return
        tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            tally.server_errors.append(_describe(case, response))
            return
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, FailureGroup) as exc:  # a check failed
            tally.violations.append(_describe(case, response, exc))

    try:
        run()
    except Unsatisfiable:
        # An operation with nothing to get wrong (no parameters, no body) has no negative cases.
        if mode is GenerationMode.POSITIVE:
            raise


@pytest.mark.timeout(BUDGET_SECONDS + 90)  # the budget, plus the last operation and the summary
def test_no_role_gets_a_5xx_or_an_undocumented_response(api_base, personas, capsys):
    schema = schemathesis.openapi.from_url(api_base + "/api/openapi.json", timeout=10)
    # The role's own credentials on every request, not generated X-API-Key
    # values (which the API reads first, so every example would be a 401).
    schema.config.generation.update(with_security_parameters=False)
    # Deletions last, so that each role's other examples still find what they
    # address; signing out everywhere after them, since it ends the role's session.
    operations = sorted(
        (r.ok() for r in schema.get_all_operations()),
        key=lambda op: (op.path == "/api/me/sessions/end", op.method.upper() == "DELETE"),
    )
    assert len(operations) >= 30, "the document lost operations"
    tally = Tally()
    started = time.monotonic()
    skipped = []
    with requests.Session() as http:
        http.trust_env = False  # 127.0.0.1 only, never a proxy from the environment
        for role in ROLES:
            headers = personas[role].headers
            for operation in operations:
                if time.monotonic() - started > BUDGET_SECONDS:
                    skipped.append(f"{role} {operation.label}")
                    continue
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    _fuzz_operation(operation, api_base, headers, mode, tally, http)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\n{tally.line()} seconds={elapsed:.0f} max_examples={MAX_EXAMPLES}")
        for problem in (tally.server_errors + tally.violations)[:30]:
            print("  " + problem)
    assert not tally.server_errors, f"{len(tally.server_errors)} responses >= 500:\n" + "\n".join(
        tally.server_errors[:20]
    )
    assert not tally.violations, f"{len(tally.violations)} schema violations:\n" + "\n".join(tally.violations[:20])
    assert not skipped, f"out of time ({BUDGET_SECONDS:.0f} s) before: {skipped[:5]}"
