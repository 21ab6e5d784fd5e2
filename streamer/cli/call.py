"""ser-call: play audio files to a ser-serve as the telephony platforms would, paced in real time.

  ser-call twilio URL --customer a.wav [--agent b.wav]
      plays Twilio Media Streams calls (connected, start, 20 ms mu-law media frames per
      track, stop)
  ser-call twilio URL --demo
      plays the shipped demo call: an angry customer (demo/angry_customer.flac) and a calm
      agent (demo/calm_agent.flac), 27 s, which raises the desk's "angry customer" alert
  ser-call vosk URL FILE
      speaks the vosk-server protocol and prints every reply
  ser-call audio-fork URL FILE [--callee b.wav]
      plays a FreeSWITCH mod_audio_fork stream
  ser-call audiosocket HOST:PORT FILE
      plays an Asterisk AudioSocket stream

wss:// and https:// URLs are checked against the system's CAs; a server with a self-signed
certificate (ser-serve --tls-cert) needs --cafile CERT. AudioSocket is plain TCP.

After a call, the results the server holds for it (GET /api/calls/ID) are printed, one line
per utterance (? for an uncertain one), then the alerts the desk raised for it (GET
/api/alerts). Exit status: 0 when every call ended normally, 1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path


from streamer.cli import run_main
from streamer.core.errors import SerError
from streamer.core.paths import checkout, data_root
from streamer.serve.client import (TWILIO_RATE, api_base, describe, load_pcm, play_audiofork, play_audiosocket,
                                   play_twilio, play_vosk, tls_client, wait_ended)

log = logging.getLogger(__name__)

# The demo call (scripts/make_angry_call.sh makes it): the customer's and the agent's tracks.
DEMO_CUSTOMER = Path("demo") / "angry_customer.flac"
DEMO_AGENT = Path("demo") / "calm_agent.flac"


def demo_files() -> tuple[Path, Path]:
    """The demo call's two tracks (customer, agent), from the installed bundle or the checkout.

    >>> [p.name for p in demo_files()]
    ['angry_customer.flac', 'calm_agent.flac']
    """
    roots = [data_root()] + ([checkout()] if checkout() is not None else [])
    for root in roots:
        customer, agent = root / DEMO_CUSTOMER, root / DEMO_AGENT
        if customer.is_file() and agent.is_file():
            return customer, agent
    raise SerError(f"--demo plays {DEMO_CUSTOMER} and {DEMO_AGENT}, which this installation lacks (they ship in "
                   "the package and the source checkout): reinstall ser-live (pip install --force-reinstall .), "
                   "or give your own files with --customer and --agent")

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ser-call", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="protocol", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--token", default=None, help="the server's token (default: $SER_SERVE_TOKEN)")
    common.add_argument("--speed", type=float, default=1.0, help="1: real time (default); 2: twice as fast; 0: no pacing")
    common.add_argument("--no-results", action="store_true", help="do not fetch and print the call's results")
    common.add_argument("--cafile", type=Path, default=None, metavar="FILE", help="trust the server certificate(s) in "
                        "this PEM file for wss:// and https:// (the CA that signed it, or a self-signed certificate "
                        "itself; default: the system's CAs)")

    tw = sub.add_parser("twilio", parents=[common], help="Twilio Media Streams calls (ws://HOST:PORT/twilio)")
    tw.add_argument("url", help="the server's Twilio endpoint, e.g. ws://127.0.0.1:8765/twilio")
    tw.add_argument("--customer", type=Path, default=None, help="the caller's audio (Twilio's inbound track); "
                    "needed unless --demo")
    tw.add_argument("--agent", type=Path, default=None, help="the agent's audio (outbound track); none: one track")
    tw.add_argument("--demo", action="store_true", help="play the shipped demo call instead: an angry customer "
                    f"({DEMO_CUSTOMER}) and a calm agent ({DEMO_AGENT}), which raises the desk's angry-customer "
                    "alert (needs the source checkout)")
    tw.add_argument("--calls", type=int, default=1, help="calls at once, all playing the same files (default: 1)")
    tw.add_argument("--stagger", type=float, default=0.0, help="seconds between the calls' starts (default: 0)")
    tw.add_argument("--call-sid", default=None, help="the call's callSid, e.g. to reconnect a call as its next segment "
                    "(default: a new one per call; with --calls N, SID-1 ... SID-N)")

    vo = sub.add_parser("vosk", parents=[common], help="the vosk-server protocol (ws://HOST:PORT/vosk)")
    vo.add_argument("url", help="the server's vosk endpoint, e.g. ws://127.0.0.1:8765/vosk")
    vo.add_argument("file", type=Path, help="the audio to send")
    vo.add_argument("--rate", type=int, default=16000, help="sample rate sent in the config (default: 16000)")

    af = sub.add_parser("audio-fork", parents=[common], help="FreeSWITCH mod_audio_fork (ws://HOST:PORT/audio-fork)")
    af.add_argument("url", help="the server's audio_fork endpoint, e.g. ws://127.0.0.1:8765/audio-fork")
    af.add_argument("file", type=Path, help="the caller's audio (left channel)")
    af.add_argument("--callee", type=Path, default=None, help="the callee's audio (right channel): a stereo stream")
    af.add_argument("--rate", type=int, choices=(8000, 16000), default=8000, help="sample rate sent (default: 8000)")

    asock = sub.add_parser("audiosocket", parents=[common], help="Asterisk AudioSocket (HOST:PORT, TCP)")
    asock.add_argument("address", help="HOST:PORT of ser-serve --audiosocket-port")
    asock.add_argument("file", type=Path, help="the caller's audio")
    asock.add_argument("--api", default=None, help="the server's HTTP root for the results (default: http://HOST:8765)")
    return ap


def client_tls(cafile: Path | None):
    """--cafile as a TLS context (None: the system's CAs); one clear error when unusable."""
    import ssl

    try:
        return tls_client(cafile)
    except FileNotFoundError:
        raise SerError(f"--cafile {cafile}: no such file; give the PEM certificate of the CA that signed the "
                       "server's certificate (for a self-signed one, that certificate itself)") from None
    except (ssl.SSLError, OSError) as exc:
        raise SerError(f"--cafile {cafile}: not a PEM certificate ({getattr(exc, 'reason', None) or exc})") from None


async def _main(args) -> int:
    import os

    import aiohttp

    token = args.token or os.environ.get("SER_SERVE_TOKEN") or None
    failed = 0
    tls = client_tls(args.cafile)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls if tls is not None else True)) as session:
        if args.protocol == "twilio":
            customer = load_pcm(args.customer, TWILIO_RATE)
            agent = load_pcm(args.agent, TWILIO_RATE) if args.agent else None

            async def one(i: int) -> dict:
                await asyncio.sleep(i * args.stagger)
                sid = args.call_sid if args.calls <= 1 or not args.call_sid else f"{args.call_sid}-{i + 1}"
                return await play_twilio(session, args.url, customer, agent, token=token, speed=args.speed, call_sid=sid)

            results = await asyncio.gather(*(one(i) for i in range(max(1, args.calls))), return_exceptions=True)
            url = args.url
        elif args.protocol == "vosk":
            x = load_pcm(args.file, args.rate)

            def show(reply: dict) -> None:
                print(json.dumps(reply, ensure_ascii=False), flush=True)

            try:
                r = await play_vosk(session, args.url, x, args.rate, token=token, speed=args.speed,
                                    on_reply=show)
            except (aiohttp.ClientError, OSError) as exc:
                print(f"call failed: {failure_text(exc, args.url)}", file=sys.stderr)
                return 1
            print(f"closed: {r['close_code']} {r['close_reason']}".rstrip(), file=sys.stderr)
            return 0 if r["close_code"] == 1000 else 1
        elif args.protocol == "audio-fork":
            chans = [load_pcm(args.file, args.rate)] + ([load_pcm(args.callee, args.rate)] if args.callee else [])
            results = await asyncio.gather(play_audiofork(session, args.url, chans, args.rate, token=token,
                                                          speed=args.speed), return_exceptions=True)
            url = args.url
        else:
            host, _, port = args.address.rpartition(":")
            if not host or not port.isdigit():
                raise SerError(f"give the AudioSocket address as HOST:PORT, not {args.address!r}")
            results = [await play_audiosocket(host, int(port), load_pcm(args.file, 8000), speed=args.speed)]
            url = args.api or f"http://{host}:8765"
        for r in results:
            if isinstance(r, BaseException):
                print(f"call failed: {failure_text(r, url)}", file=sys.stderr)
                failed += 1
                continue
            code = r.get("close_code")
            print(f"call {r['call_id']}: " + (f"closed {code} {r.get('close_reason', '')}".rstrip()
                                               if code is not None else f"server closed: {r.get('server_closed')}")
                  + (f", up to {r['late_s']:.2f} s late" if r.get("late_s") else ""))
            if code not in (None, 1000) or r.get("server_closed") is False:
                failed += 1
            if not args.no_results:
                detail = await wait_ended(session, url, r["call_id"], token)
                for line in describe(detail or {}):
                    print(line)
                for line in alert_lines(await fetch_alerts(session, url, r["call_id"], token)):
                    print(line)
    return 1 if failed else 0


async def fetch_alerts(session, url: str, call_id: str, token: str | None) -> list[dict]:
    """The alerts the server's desk raised for ``call_id`` (GET /api/alerts); none when it has no desk."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(f"{api_base(url)}/api/alerts", headers=headers) as r:
            if r.status != 200:
                return []
            alerts = (await r.json()).get("alerts") or []
    except (aiohttp.ClientError, ValueError):
        return []
    return [a for a in alerts if a.get("call_id") == call_id]


def alert_lines(alerts: list[dict]) -> list[str]:
    """One line per alert, as the desk lists them.

    >>> alert_lines([{"rule": "angry customer", "reason": "customer angry in 3 windows in a row, confidence 0.65",
    ...               "at_s": 11.85}])
    ['  alert: angry customer at 11.8 s: customer angry in 3 windows in a row, confidence 0.65']
    >>> alert_lines([])
    ['  no alerts']
    """
    if not alerts:
        return ["  no alerts"]
    return [f"  alert: {a.get('rule')}" + (f" at {a['at_s']:.1f} s" if a.get("at_s") is not None else "")
            + f": {a.get('reason')}" for a in alerts]


def failure_text(exc: BaseException, url: str) -> str:
    """What went wrong, in the user's words: a refused connection names the address, not
    aiohttp's connector internals.

    >>> failure_text(ConnectionRefusedError(111, "Connect call failed"), "ws://127.0.0.1:9/twilio")
    'nothing listens at ws://127.0.0.1:9/twilio (connection refused): is ser-serve running, on that port?'
    """
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (f"{url}: the server's certificate is not trusted ({exc.certificate_error}): pass --cafile with the CA "
                "that signed it (for a self-signed certificate, the certificate itself)")
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"{url}: TLS failed ({exc.os_error}): does the server serve TLS (ser-serve --tls-cert)? else use ws://"
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return f"nothing listens at {url} (connection refused): is ser-serve running, on that port?"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {url}: {cause.strerror or cause}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"{url} refused the WebSocket: HTTP {exc.status} {exc.message}"
    return str(exc) or type(exc).__name__


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: twilio takes --customer or --demo, not both."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.protocol == "twilio":
        if args.demo and (args.customer or args.agent):
            ap.error("--demo plays the shipped demo call: give either --demo or --customer/--agent, not both")
        if not args.demo and args.customer is None:
            ap.error("twilio needs --customer FILE (the caller's audio), or --demo for the shipped demo call")
        if args.demo:
            args.customer, args.agent = demo_files()
    return args


def main() -> int:
    args = parse_args()
    return asyncio.run(_main(args))


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
