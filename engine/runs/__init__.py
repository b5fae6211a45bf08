"""Training runs seen from outside: the run-directory protocol (files, events, lock), the
folded state of a run and starting or attaching to a background run."""
