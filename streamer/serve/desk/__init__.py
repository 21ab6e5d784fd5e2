"""The supervisor's desk: its routes, the alert runner and the static page."""
