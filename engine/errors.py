"""Engine exceptions, importable without torch (the CLI maps them to one-line errors cheaply)."""


class BundleError(Exception):
    """A model bundle or weights file that cannot be used; the message is one line for the user."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most limit characters (its type's name when empty): what a
    one-line error quotes of a library's exception."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__

