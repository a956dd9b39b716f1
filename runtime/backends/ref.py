"""`ref`: the numpy reference backend, the numeric contract executed as written (compiler.reference)."""

from __future__ import annotations

from compiler.reference import Interpreter
from runtime.backends.base import Backend


class RefBackend(Backend):
    name = "ref"

    def __init__(self, model):
        super().__init__(model)
        self.interp = Interpreter(model.graph)

    def run(self, feeds):
        return self.interp.run(feeds)
