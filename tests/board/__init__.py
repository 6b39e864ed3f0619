"""Seed boards as modems (smsgw_worker/board)."""
