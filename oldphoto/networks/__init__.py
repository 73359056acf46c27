"""The method's networks, one architecture per module, each configured by a plain dataclass."""
