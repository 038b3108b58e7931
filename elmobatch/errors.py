"""The base class of the errors elmobatch raises on purpose."""


class ElmobatchError(Exception):
    """An error whose message is written for people: it names the file, row or setting and what was
    expected, so it is shown as it is, without the exception's type. Each subclass also derives from
    the built-in error it is a kind of (ValueError, OSError, RuntimeError), which callers may catch."""
