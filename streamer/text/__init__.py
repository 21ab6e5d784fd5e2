"""The text emotion model: the embedded encoder and head (or a Hugging Face model), its text
normalisation, and its arousal/valence head."""
