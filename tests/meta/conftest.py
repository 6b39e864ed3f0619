"""The test support itself (tests/support/): isolation between concurrent
runs, and the one wait."""

from shared_fixtures import python, run_id  # noqa: F401  (one set per tier)
