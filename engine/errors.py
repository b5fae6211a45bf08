"""Engine exceptions, importable without torch (the CLI maps them to one-line errors cheaply)."""


class BundleError(Exception):
    """A model bundle or weights file that cannot be used; the message is one line for the user."""
