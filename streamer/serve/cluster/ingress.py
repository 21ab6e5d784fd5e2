"""The FastAPI ingress of a gateway: every path, HTTP or WebSocket, through the gateway's
:class:`~streamer.serve.cluster.asgi.Bridge`. No ``from __future__ import annotations`` here: FastAPI
reads these handlers' annotations (``Request``, ``WebSocket``) at definition time."""

import asyncio
import logging
import os

from fastapi import FastAPI, Request, WebSocket

log = logging.getLogger(__name__)

METHODS = ["GET", "HEAD", "POST"]


def _fastapi() -> FastAPI:
    return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def asgi_app(gateway) -> FastAPI:
    """A FastAPI app serving ``gateway`` (a :class:`~streamer.serve.cluster.gateway.Gateway`) outside
    Ray: for tests, or behind any ASGI server."""
    app = _fastapi()

    @app.websocket("/{path:path}")
    async def ws(websocket: WebSocket, path: str) -> None:
        await gateway.bridge.websocket(websocket)

    @app.api_route("/{path:path}", methods=METHODS)
    async def http(request: Request, path: str):
        return await gateway.bridge.http(request)

    return app


_built: dict = {}


def call_gateway(gateway_class, name: str):
    """The ``CallGateway`` Ray Serve deployment (made once per process) named ``name``, each
    replica serving one ``gateway_class`` (:class:`streamer.serve.cluster.gateway.Gateway`)."""
    if "CallGateway" in _built:
        return _built["CallGateway"]
    from ray import serve

    ingress = _fastapi()

    # health checks every 2 s: Ray's controller finds a killed replica at the next check and only
    # then starts its replacement, which the desk's /events needs when it was the only gateway
    @serve.deployment(name=name, logging_config={"enable_access_log": False}, health_check_period_s=2.0)
    @serve.ingress(ingress)
    class CallGateway:
        """ser-serve's endpoints; each socket (a call, a desk's feed) is served where it was accepted."""

        async def __init__(self, opts) -> None:  # a GatewayOptions
            logging.getLogger("streamer").setLevel(logging.INFO)
            replica = ""
            try:
                ctx = serve.get_replica_context()
                replica = f"{ctx.replica_id.unique_id}-{os.getpid()}"
            except Exception:  # not in a replica: the bus names it
                pass
            # loading the models (or connecting to their deployments) blocks: not on the replica's loop
            self.gateway = await asyncio.to_thread(gateway_class, opts, None, replica)
            await self.gateway.start()
            log.info("gateway replica %s up: max %d calls, bus %s", replica, self.gateway.cfg.server.max_calls,
                     self.gateway.registry.bus.kind)

        @ingress.websocket("/{path:path}")
        async def ws(self, websocket: WebSocket, path: str) -> None:
            await self.gateway.bridge.websocket(websocket)

        @ingress.api_route("/{path:path}", methods=METHODS)
        async def http(self, request: Request, path: str):
            return await self.gateway.bridge.http(request)

        async def drain(self) -> int:
            """End and log every call of this replica now (ser-serve's shutdown); the calls ended."""
            n = len(self.gateway.registry.active_calls)
            await self.gateway.stop()
            return n

        async def __del__(self) -> None:
            gw = getattr(self, "gateway", None)
            if gw is not None:
                await gw.stop()

    _built["CallGateway"] = CallGateway
    return CallGateway
