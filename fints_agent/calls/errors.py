"""The error of unusable tools and schemas (in its own module so every part of the package can
raise it without import cycles)."""

from __future__ import annotations


class ToolSchemaError(ValueError):
    """A tool cannot be used: it has no name, a bad name, a duplicate name or a bad schema."""
