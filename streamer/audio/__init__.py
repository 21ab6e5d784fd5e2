"""Audio input, features, the Whisper encoder and the audio emotion model."""

SAMPLE_RATE = 16_000
