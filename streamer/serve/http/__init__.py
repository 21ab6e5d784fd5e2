"""ser-serve's HTTP side: the aiohttp application, the token, /metrics, the WebSocket helpers."""
