"""User-facing errors.

A `LowbitError` is something the user can fix (a bad path, a bad spec, a shape that does not fit the group
size). The command line prints it as one line, `error: <what>; <fix>`, and exits with code 2; everything else
is a bug and keeps its traceback.
"""


def _one_line(s: str) -> str:
    """Control characters escaped (a file or tensor name may hold a newline): the message stays one line."""
    return s if s.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


class LowbitError(Exception):
    def __init__(self, what: str, fix: str = ""):
        self.what = _one_line(str(what))
        self.fix = _one_line(str(fix))
        super().__init__(self.what if not self.fix else f"{self.what}; {self.fix}")

    def line(self) -> str:
        return f"error: {self}"
