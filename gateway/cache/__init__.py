"""The embedding cache: per-input vectors keyed by everything that decides them, in one of
a family of backends (memory, SQLite, Redis), with in-flight coalescing in front."""

from __future__ import annotations

from gateway.cache.backend import CacheBackend
from gateway.cache.cache import CacheCounters, Compute, Deliver, EmbeddingCache, Resolved
from gateway.cache.entry import Entry, decode_entry, encode_entry
from gateway.cache.flights import FlightAbandoned, Flights
from gateway.cache.keys import Namespace, namespace
from gateway.cache.memory import MemoryBackend
from gateway.cache.sqlite import SQLiteBackend

__all__ = [
    "CacheBackend",
    "CacheCounters",
    "Compute",
    "Deliver",
    "EmbeddingCache",
    "Entry",
    "FlightAbandoned",
    "Flights",
    "MemoryBackend",
    "Namespace",
    "Resolved",
    "SQLiteBackend",
    "decode_entry",
    "encode_entry",
    "namespace",
]
