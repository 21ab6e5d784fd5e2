"""The composition root: configuration, the models a process loads, and the threaded runner
that every front end opens a stream's session through."""
