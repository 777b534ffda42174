"""Distributed runs: rows sent as Celery tasks through Redis to `trunkline worker` processes."""
