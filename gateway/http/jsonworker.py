"""The worker process's side of :class:`gateway.http.body.JsonParser`; it imports nothing
of the gateway, so the worker stays small."""

from __future__ import annotations

import multiprocessing
import os
import threading

__all__ = ["watch_parent"]


def watch_parent() -> None:
    """Pool initializer: the worker exits as soon as the gateway process is gone, however it
    ended (a killed gateway never shuts its pool down, and the worker would otherwise wait
    forever, holding the gateway's stdout and stderr open)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait() -> None:
        parent.join()  # returns when the parent's sentinel closes: the parent has exited
        os._exit(0)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()
