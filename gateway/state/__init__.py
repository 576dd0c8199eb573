"""State shared by workers and replicas (``state: redis://...``): one pooled client, the
rate limits and the circuit states that live in it."""
