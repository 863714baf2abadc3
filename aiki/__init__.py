"""Aiki: durable workflows as ordinary async Python, on trio.

This package is the product: the SDK users import, the server and worker processes
and the command line. It builds on `transport` (Redis Streams, PostgreSQL, codecs) and
`actors` (the supervised actor runtime).
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import AikiError as AikiError

try:
    __version__ = version("aiki")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = ["AikiError", "__version__"]
