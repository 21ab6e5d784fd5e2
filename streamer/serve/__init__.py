"""ser-serve: many calls at once in one process (or many, on Ray), from the streams telephony
platforms send. The path of one media frame:

- ``protocols/``: each platform's messages parsed into events (Twilio, vosk-server,
  mod_audio_fork, AudioSocket), no socket code;
- ``transport``: the one call loop that every connection runs (admission, idle timeout, close
  codes, ending the call);
- ``calls/``: the registry of calls, a call, its tracks (each a stream session opened through
  ``streamer.runtime.streams``), the feed of results;
- ``bus/``: where results are published (in-process, or Redis Streams across replicas);
- ``http/``: the aiohttp application, the token, ``/metrics``, the WebSocket helpers;
- ``desk/``: the supervisor's page, its alert runner;
- ``cluster/``: the Ray Serve gateway, its ASGI bridge, the model deployments and the driver;
- ``client``: ``ser-call``, a client of every protocol (tests and benchmarks use it too).
"""
