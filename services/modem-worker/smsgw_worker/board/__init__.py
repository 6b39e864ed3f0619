"""Seed boards: ESP32 boards with a SIM module that speak the seed's MQTT
protocol, worked as modems with another transport (docs/boards.md).

- protocol.py  the seed's topics (under a configurable root), payloads, status words
- settings.py  `BoardSettings` (MODEM_TRANSPORT=seed-mqtt, BOARD_NUMBER, BOARD_*)
- worker.py    `BoardWorker`: one board, the same queue, states and events as a USB modem
- emulator.py  `EmulatedBoard` and `python -m smsgw_worker.board.emulator` (tests, demo)
"""
