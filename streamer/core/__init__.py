"""The per-stream core and the shared inference services every front end runs on.

- :mod:`streamer.core.session`: :class:`StreamSession`, one stream's analysis with no threads.
- :mod:`streamer.core.services`: one batching service per model per process.

Shells (``ser-live``'s threads in ``streamer.runtime.pipeline``, ``ser-analyze``'s processes,
``ser-serve``'s asyncio handlers) feed sessions and deliver their events; they never copy
the wiring.
"""
