"""The one interface every backend implements: run a graph's feeds to its outputs."""

from __future__ import annotations

import numpy as np


class Backend:
    name = "?"

    def __init__(self, model):
        """model: a runtime.CompiledModel (graph, artifact directory, manifest)."""
        self.model = model

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
