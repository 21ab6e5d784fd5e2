"""Terminal rendering (pure: rich renderables built from plain snapshots)."""
