"""Public errors of the Aiki SDK. Every error Aiki raises to users derives from `AikiError`."""

from __future__ import annotations


class AikiError(Exception):
    """Base class of every error the Aiki SDK raises."""
