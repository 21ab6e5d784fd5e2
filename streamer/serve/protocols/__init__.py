"""The call protocols as parsers: bytes or JSON in, the call loop's events out (no sockets):
Twilio Media Streams, vosk-server, FreeSWITCH mod_audio_fork, Asterisk AudioSocket, mu-law, close codes."""
