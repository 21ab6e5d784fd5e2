"""Audio input, features, the Whisper encoder and the audio emotion model (16 kHz mono:
``streamer.core.messages.SAMPLE_RATE``)."""
