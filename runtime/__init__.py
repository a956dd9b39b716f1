"""lowbit runtime: load a compiled artifact and run it on any backend.

    import runtime
    m = runtime.load("out/llama-tiny-w4")
    ids = m.encode("Hello")
    result = m.generate(ids, 16, backend="ref")
"""

from runtime.model import CompiledModel, load

__all__ = ["CompiledModel", "load"]
