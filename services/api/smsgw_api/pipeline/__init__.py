"""Background work, leader-elected: the election, durable event cursors,
the MQTT event consumer, webhook delivery, opt-out keywords and the sweeper.
Runs with or without the HTTP app (pipeline/runner.py)."""
