"""Embedding backends. Nothing here imports ``gateway``: providers are pure transports."""
