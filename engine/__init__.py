"""Helium's inference engine: the TinySLM model, sampling, model bundles and the runtime.

The CLI and the TUI are thin layers over this package; it never imports them.
"""
