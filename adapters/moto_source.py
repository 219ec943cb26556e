"""How the patches of moto check that moto's source still reads as they assume.

A patch that relies on how moto uses a value (only reads it, copies it before
changing it) installs only when each use of that name in the function's source,
with the characters after it, is the one it was written against; any other moto
keeps its own behaviour.
"""

from __future__ import annotations

import re

__all__ = ["uses"]


def uses(source: str, name: str, *, after: int = 16) -> list[str]:
    """Each use of the name `name` in `source`, with the `after` characters after it."""
    return [source[m.end() : m.end() + after] for m in re.finditer(rf"\b{name}\b", source)]
