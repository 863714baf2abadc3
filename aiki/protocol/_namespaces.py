"""Namespaces: every run, schedule, worker and workflow version belongs to one, and a key
acts in one (an admin key in all). Names are short lowercase DNS labels, so they fit in
stream keys and URLs as they are."""

from __future__ import annotations

import re
from typing import Final

DEFAULT_NAMESPACE: Final = "default"
"""Where everything goes unless a key says otherwise (and all that existed before
namespaces)."""
NAMESPACE_PATTERN: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_namespace(name: str) -> bool:
    """Whether ``name`` is a valid namespace name (1-63 characters: lowercase letters,
    digits and inner hyphens)."""
    return NAMESPACE_PATTERN.fullmatch(name) is not None
