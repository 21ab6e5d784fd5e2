"""ser-live: offline, real-time multimodal speech emotion analysis."""

__version__ = "0.1.0"
