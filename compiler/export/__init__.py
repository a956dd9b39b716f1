"""Export of compiled artifacts to other tools' formats (`lowbit export OUT --format gguf`)."""

FORMATS = ("gguf",)
