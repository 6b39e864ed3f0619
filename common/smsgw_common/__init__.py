"""Contracts shared by the gateway's services: settings, models, topics, payloads."""
