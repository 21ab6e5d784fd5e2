"""Speech recognition engines behind one small streaming interface (``base.AsrEngine``)."""
