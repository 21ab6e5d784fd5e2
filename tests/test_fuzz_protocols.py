"""Hostile clients, property-based (hypothesis): every parser a caller can reach, fed anything.

The promise (issue 28, item 3): any input is either accepted or refused with the protocol's
error (:class:`ProtocolError`, a close code of 1003, 1007 or 1008 and a reason), never any
other exception. "Accepted" means more than "did not raise": what a parser lets through must
be usable by the call loop and the log writer (int16 audio at a rate the tracks take, a call's
metadata that the NDJSON log can write as UTF-8 without NaN). The desk's sign-in form and
alert acknowledgement are fuzzed over HTTP on a server without models: never a 500.

The strategies mix well-formed messages with each field replaced by any JSON value (NaN and
infinity included), truncated JSON, deep nesting, huge integers, escaped lone surrogates,
base64 garbage, random bytes and random splits of AudioSocket streams. ``max_examples`` is
modest so that the file runs in seconds (``SER_FUZZ_EXAMPLES=5000`` for a longer hunt);
``database=None`` leaves no .hypothesis folder.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import types
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.serve.protocols import audiofork, audiosocket, twilio, vosk, wire
from streamer.serve.protocols.wire import ProtocolError
from streamer.serve.transport import Bad, Media, Note, Start, Stop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PARSER_CODES = {1003, 1007, 1008}  # what a parser may close with (1009 is aiohttp's, 1013 admission's)
EXAMPLES = int(os.environ.get("SER_FUZZ_EXAMPLES", "150"))  # more for a longer hunt: SER_FUZZ_EXAMPLES=5000
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
HTTP = settings(max_examples=max(20, EXAMPLES // 4), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- strategies -------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=10)
TOKENS = ['{', '}', '[', ']', ',', ':', '"event"', '"start"', '"media"', '"payload"', '"config"', '"eof"', '1', '-',
          '1e999', 'NaN', 'Infinity', 'true', 'null', '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"é"', ' ', '"']
json_garbage = st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)
hostile_text = st.one_of(
    st.text(max_size=120),
    json_garbage,
    st.integers(100, 3000).map(lambda n: "[" * n + "]" * n),  # nesting deeper than the JSON decoder recurses
    st.integers(100, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(4301, 6000).map(lambda n: "1" * n),  # over Python's integer-string limit
    st.sampled_from(['{"event": "start", "start": {"callSid": "\\ud800"}}', '{"config": {"sample_rate": 1e999}}',
                     '{"callId": "\\udc00", "channels": 1}', '{"config": {"sample_rate": NaN}}', '{"x": -Infinity}']),
)


def truncated(dumped: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(dumped, st.floats(0, 1)).map(lambda t: t[0][:int(len(t[0]) * t[1])])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


payloads = st.one_of(
    st.binary(max_size=320).map(b64),
    st.tuples(st.binary(min_size=1, max_size=160).map(b64), st.text(min_size=1, max_size=3), st.integers(0, 300))
    .map(lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),  # base64 with garbage inside
    st.text(max_size=40),
    json_values,
)
media_format = st.fixed_dictionaries({}, optional={"encoding": st.just("audio/x-mulaw") | json_values,
                                                   "sampleRate": st.just(8000) | json_values,
                                                   "channels": st.just(1) | json_values})
twilio_start = st.fixed_dictionaries({}, optional={
    "callSid": st.text(max_size=30) | json_values, "streamSid": json_values, "accountSid": json_values,
    "tracks": st.lists(st.sampled_from(["inbound", "outbound"]) | json_values, max_size=3) | json_values,
    "mediaFormat": media_format | json_values,
    "customParameters": st.dictionaries(st.sampled_from(["token", "desk", "x"]) | st.text(max_size=6), json_values,
                                        max_size=3) | json_values})
twilio_media = st.fixed_dictionaries({}, optional={"track": st.sampled_from(["inbound", "outbound"]) | json_values,
                                                   "payload": payloads, "chunk": json_values, "timestamp": json_values})
twilio_objects = st.one_of(
    st.builds(lambda s: {"event": "start", "start": s}, twilio_start | json_values),
    st.builds(lambda m: {"event": "media", "media": m}, twilio_media | json_values),
    st.builds(lambda e, rest: {**rest, "event": e}, st.sampled_from(sorted(twilio.EVENTS)) | json_values,
              st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    json_values,
)
twilio_text = twilio_objects.map(json.dumps)
twilio_messages = st.one_of(twilio_text, truncated(twilio_text), hostile_text, st.binary(max_size=64))
GOOD_START = json.dumps({"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1", "tracks": ["inbound", "outbound"],
                                                     "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                                     "channels": 1}}})

vosk_config = st.fixed_dictionaries({}, optional={
    "sample_rate": st.integers(0, 100_000) | st.floats() | st.sampled_from([8000, 16000, 16000.0, 44100]) | json_values,
    "words": json_values, "phrase_list": json_values, "max_alternatives": json_values})
vosk_objects = st.one_of(st.builds(lambda c: {"config": c}, vosk_config | json_values),
                         st.builds(lambda v: {"eof": v}, st.just(1) | json_values),
                         st.builds(lambda v: {"reset": v}, st.just(1) | json_values), json_values)
vosk_text = st.one_of(vosk_objects.map(json.dumps), truncated(vosk_objects.map(json.dumps)), hostile_text)
vosk_messages = vosk_text | st.binary(max_size=400)

fork_metadata = st.fixed_dictionaries({}, optional={
    "sampleRate": st.sampled_from([8000, 16000, "8k", "16k", " 16K ", "8000", "44100", "", "1" * 5000]) | json_values,
    "channels": st.sampled_from([1, 2, "1", "2", " 2 ", "²", "١", "3", "-1"]) | json_values,
    "mixType": st.sampled_from(["mono", "mixed", "stereo", "STEREO"]) | json_values,
    "callId": st.text(max_size=30) | json_values, "callSid": json_values})
fork_text = fork_metadata.map(json.dumps)
fork_messages = st.one_of(fork_text, truncated(fork_text), hostile_text, st.binary(max_size=640))


# --- what "accepted" must mean ------------------------------------------------------------------
def loggable(obj) -> None:
    """What the call log (NDJSON, UTF-8, no NaN) and the feed do with a call's metadata."""
    json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_refusal(exc: ProtocolError) -> None:
    assert exc.code in PARSER_CODES, (exc.code, exc.reason)
    assert isinstance(exc.reason, str) and exc.reason.strip()
    exc.reason.encode("utf-8")  # it goes into a close frame


def check_events(events: list, rates=(8000, 48000)) -> bool:
    """The events are what the call loop takes; False once the stream has ended (a Stop or Bad)."""
    assert isinstance(events, list)
    for ev in events:
        if isinstance(ev, Media):
            assert isinstance(ev.track, str) and ev.track
            assert isinstance(ev.rate, int) and not isinstance(ev.rate, bool) and rates[0] <= ev.rate <= rates[1]
            assert isinstance(ev.pcm, np.ndarray) and ev.pcm.dtype == np.int16 and ev.pcm.ndim == 1
        elif isinstance(ev, Start):
            assert ev.call_id is None or (isinstance(ev.call_id, str) and ev.call_id)
            assert ev.tracks and all(isinstance(t, str) and t for t in ev.tracks)
            assert ev.token is None or isinstance(ev.token, str)
            loggable({"call_id": ev.call_id, "meta": ev.meta})
        elif isinstance(ev, Note):
            assert isinstance(ev.text, str)
            ev.text.encode("utf-8")
        elif isinstance(ev, (Stop, Bad)):
            if isinstance(ev, Bad):
                check_refusal(ev.error)
            return False
        else:
            assert type(ev).__name__ == "Reset", ev  # vosk's own
    return True


def feed(protocol, messages) -> None:
    """Each message to the parser until it refuses one or the stream ends."""
    check_events(protocol.at_connect())
    for m in messages:
        try:
            events = protocol.parse(m)
        except ProtocolError as exc:
            check_refusal(exc)
            return
        if not check_events(events):
            return


# --- Twilio -------------------------------------------------------------------------------------
@FAST
@given(hostile_text | twilio_text | truncated(twilio_text))
def test_twilio_any_text_is_a_message_or_a_protocol_error(text):
    try:
        msg = twilio.parse(text)
    except ProtocolError as exc:
        check_refusal(exc)
        return
    assert isinstance(msg, dict) and msg["event"] in twilio.EVENTS


@FAST
@given(twilio_objects)
def test_twilio_start_and_media_fields_are_checked_whatever_their_type(obj):
    try:  # as the socket's text arrives: what wire.loads lets through (no NaN, no infinity)
        obj = wire.loads(json.dumps(obj), "the message is not JSON")
    except ProtocolError:
        return
    if not isinstance(obj, dict):
        return
    try:
        s = twilio.parse_start(obj)
        assert set(s["tracks"]) <= set(twilio.TRACK_NAMES) and s["tracks"]
        loggable({k: v for k, v in s.items()})
    except ProtocolError as exc:
        check_refusal(exc)
    try:
        name, pcm = twilio.payload_pcm(obj, ["inbound", "outbound"])
        assert name in ("customer", "agent") and pcm.dtype == np.int16
    except ProtocolError as exc:
        check_refusal(exc)


@FAST
@given(st.binary(max_size=400))
def test_twilio_media_payload_round_trips_any_bytes(raw):
    name, pcm = twilio.payload_pcm({"media": {"track": "outbound", "payload": b64(raw)}}, ["inbound", "outbound"])
    assert name == "agent" and len(pcm) == len(raw)


@FAST
@given(st.booleans(), st.lists(twilio_messages, max_size=8))
def test_twilio_any_session_is_events_or_a_protocol_error(started, messages):
    feed(twilio.TwilioProtocol(), ([GOOD_START] if started else []) + messages)


# --- vosk ---------------------------------------------------------------------------------------
@FAST
@given(vosk_text)
def test_vosk_any_text_is_a_command_or_a_protocol_error(text):
    try:
        kind, opts = vosk.parse_command(text, vosk.VoskOptions())
    except ProtocolError as exc:
        check_refusal(exc)
        return
    assert kind in ("config", "eof", "reset")
    assert isinstance(opts.sample_rate, int) and vosk.MIN_RATE <= opts.sample_rate <= vosk.MAX_RATE
    assert isinstance(opts.words, bool)


@FAST
@given(st.lists(vosk_messages, max_size=8))
def test_vosk_any_session_is_events_or_a_protocol_error(messages):
    feed(vosk.VoskProtocol(registry=None), messages)


# --- FreeSWITCH mod_audio_fork ----------------------------------------------------------------
@FAST
@given(fork_text | hostile_text | truncated(fork_text))
def test_audiofork_any_metadata_is_a_format_or_a_protocol_error(text):
    try:
        f = audiofork.parse_metadata(text)
    except ProtocolError as exc:
        check_refusal(exc)
        return
    assert f.rate in audiofork.RATES and f.channels in (1, 2) and len(f.tracks) == f.channels
    loggable({"call_id": f.call_id, "meta": f.meta})


@FAST
@given(st.lists(fork_messages, max_size=8))
def test_audiofork_any_session_is_events_or_a_protocol_error(messages):
    feed(audiofork.AudioForkProtocol(), messages)


@FAST
@given(st.binary(max_size=640), st.sampled_from([1, 2]))
def test_audiofork_frames_split_into_whole_samples_or_are_refused(data, channels):
    try:
        parts = audiofork.split(data, channels)
    except ProtocolError as exc:
        check_refusal(exc)
        assert len(data) % (2 * channels)
        return
    assert len(parts) == channels and sum(len(p) for p in parts) * 2 == len(data)


# --- Asterisk AudioSocket ----------------------------------------------------------------------
as_frames = st.tuples(st.sampled_from([0x00, 0x01, 0x03, 0x10, 0x11, 0xFF]) | st.integers(0, 255), st.binary(max_size=400))


def pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0] + at, at + [len(stream)])]


@FAST
@given(st.lists(as_frames, max_size=12), st.lists(st.integers(0, 10_000), max_size=20))
def test_audiosocket_frames_come_back_whole_from_any_split(frames, cuts):
    stream = b"".join(audiosocket.encode(k, p) for k, p in frames)
    parser, got = audiosocket.FrameParser(), []
    for piece in pieces(stream, cuts):
        got += parser.push(piece)
        assert parser.pending <= 3 + audiosocket.MAX_PAYLOAD  # never more than one frame held
    assert [(f.kind, f.payload) for f in got] == frames and parser.pending == 0


@FAST
@given(st.booleans(), st.lists(as_frames, max_size=10), st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=20))
def test_audiosocket_any_stream_is_events_or_a_refusal(uuid_first, frames, junk, cuts):
    """Well-formed frames of any kind and payload, then random bytes (a length that lies, a
    truncated header), in any split: events, a Bad (the protocol's error) or more to wait for."""
    stream = (audiosocket.uuid_message("6f1c2a3b-0000-4000-8000-00000000abcd") if uuid_first else b"")
    stream += b"".join(audiosocket.encode(k, p) for k, p in frames) + junk
    proto = audiosocket.AudioSocketProtocol("fuzz")
    feed(proto, pieces(stream, cuts))
    assert proto.parser.pending <= 3 + audiosocket.MAX_PAYLOAD
    closed = proto.peer_closed()
    assert closed is None or "inside a message" in closed


# --- who may come in: tokens, cookies and Twilio's signature, as aiohttp hands them over ------
TOKEN = "t0ken"
header_text = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")) | st.text(max_size=40)


@FAST
@given(header_text, header_text, header_text, header_text)
def test_any_token_header_query_or_signature_is_checked_without_raising(bearer, query, signature, host):
    from streamer.serve.http.auth import Auth

    auth = Auth(TOKEN, "tw1l1o")
    status = auth.check({"Authorization": "Bearer " + bearer}, {"token": query})
    assert status in ("ok", "wrong", "missing")
    assert status == "ok" or bearer.strip() != TOKEN
    assert status != "ok" or TOKEN in (bearer.strip(), query)  # in only with the token itself
    assert auth.twilio_signature_ok({"X-Twilio-Signature": signature, "X-Forwarded-Host": host}, "https", host,
                                    "/twilio") in (True, False)


# --- the desk's sign-in and acknowledgement ----------------------------------------------------
MODELS = types.SimpleNamespace(names={"audio": "(none: fuzz test)"}, audio=None, text=None)
CONTENT_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "multipart/form-data",
                 "text/plain", "application/x-www-form-urlencoded; charset=latin-1", "application/json", "",
                 "multipart/form-data; boundary=", "application/x-www-form-urlencoded; charset=nope"]
form_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: ("token=" + t).encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from([b"token=", b"&", b"%", b"%ff", b"%zz", b"t0ken", b"\xff\xfe", b"--xyz\r\n",
                              b'Content-Disposition: form-data; name="token"\r\n\r\n', b"\r\n", b"\n", b"\x00", b"--xyz--"]),
             max_size=12).map(b"".join),
)


@pytest.fixture(scope="module")
def desk_server(tmp_path_factory):
    """A ser-serve app with its desk on 127.0.0.1 (no models: the routes only), a client session,
    and the event loop they run on."""
    import aiohttp

    from streamer.serve.http.app import start
    from streamer.serve.server import build_server
    from tests.serve_util import server_config

    loop = asyncio.new_event_loop()
    tmp = tmp_path_factory.mktemp("fuzz-desk")

    async def up():
        cfg = server_config(max_message_bytes=65536, twilio_auth_token="tw1l1o")  # the signature is checked too
        built = build_server(MODELS, cfg, TOKEN, log_dir=tmp, loop=loop)
        runner, port = await start(built.app, "127.0.0.1", 0, shutdown_timeout=1.0)
        return runner, f"http://127.0.0.1:{port}", aiohttp.ClientSession()

    runner, url, http = loop.run_until_complete(up())
    yield loop, url, http
    loop.run_until_complete(http.close())
    loop.run_until_complete(runner.cleanup())
    loop.close()


@HTTP
@given(form_bodies, st.sampled_from(CONTENT_TYPES) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
def test_desk_sign_in_takes_any_body_without_a_server_error(desk_server, body, content_type):
    loop, url, http = desk_server

    async def post():
        headers = {"Content-Type": content_type} if content_type else {}
        async with http.post(url + "/login", data=body, headers=headers, allow_redirects=False) as r:
            return r.status, r.headers.get("Set-Cookie")

    status, cookie = loop.run_until_complete(post())
    assert status in (303, 400, 401, 413, 415), status
    assert (status == 303) == (cookie is not None)  # signed in only with the token


@HTTP
@given(st.text(min_size=1, max_size=60), st.binary(max_size=200), st.booleans())
def test_desk_ack_takes_any_alert_id_and_body_without_a_server_error(desk_server, alert_id, body, with_token):
    loop, url, http = desk_server

    async def post():
        headers = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        path = f"/api/alerts/{quote(alert_id.encode('utf-8', 'surrogatepass'), safe='')}/ack"
        async with http.post(url + path, data=body, headers=headers, allow_redirects=False) as r:
            return r.status

    status = loop.run_until_complete(post())
    assert status in ((400, 404, 405) if with_token else (400, 401, 404, 405)), status


@HTTP
@given(st.sampled_from(["Authorization: Bearer ", "Cookie: ser_desk=", "X-Twilio-Signature: ", "Host: ",
                        "X-Forwarded-Host: "]),
       st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
       st.sampled_from(["/", "/api/calls", "/api/desk", "/twilio", "/events", "/login", "/metrics"]))
def test_any_bytes_in_the_headers_that_carry_a_token_are_refused_not_a_500(desk_server, header, value, path):
    loop, url, _ = desk_server
    port = int(url.rsplit(":", 1)[1])

    async def raw():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        host = b"" if header == "Host: " else b"Host: 127.0.0.1\r\n"
        writer.write(f"GET {path} HTTP/1.1\r\n".encode() + host + header.encode() + value + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return status

    status = loop.run_until_complete(raw())
    allowed = rb"(200|400)" if path == "/login" else rb"(400|401|403|404)"  # 400: aiohttp's own, for a bad header
    assert re.match(rb"HTTP/1\.[01] " + allowed + rb" ", status), status


@HTTP
@given(st.text(max_size=60))
def test_desk_token_in_the_query_signs_in_only_when_it_is_the_token(desk_server, token):
    loop, url, http = desk_server

    async def get():
        async with http.get(url + "/", params={"token": token}, allow_redirects=False) as r:
            return r.status

    status = loop.run_until_complete(get())
    assert status == (303 if token == TOKEN else 401), status  # else the login form, never the desk
