"""Calls and their tracks: the registry (admission, ending, the feed), a call, a track's runner, a subscriber's feed."""
