"""lowbit compiler: model import, graph IR, quantization and lowering to backends."""

__version__ = "0.1.0"
