"""A model on disk: the bundle format (load, save, its small JSON files), finding a model
by name or path, and installing one by name."""
