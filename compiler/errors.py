"""User-facing errors.

A `LowbitError` is something the user can fix (a bad path, a bad spec, a shape that does not fit the group
size). The command line prints it as one line, `error: <what>; <fix>`, and exits with code 2; everything else
is a bug and keeps its traceback.
"""


class LowbitError(Exception):
    def __init__(self, what: str, fix: str = ""):
        self.what = what
        self.fix = fix
        super().__init__(what if not fix else f"{what}; {fix}")

    def line(self) -> str:
        return f"error: {self}"
