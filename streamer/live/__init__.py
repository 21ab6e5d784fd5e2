"""The live shell: audio sources (microphone, file, pushed audio) through a gap-aware ring reader,
and the session log writer."""
