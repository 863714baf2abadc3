"""The wire: how messages become bytes and back, strictly.

A JSON codec for frozen attrs messages (`WireCodec`), the converter it is built on
(`make_wire_converter`) and its error (`CodecError`). It depends on attrs, cattrs and
orjson only, so everything that speaks the protocol (the client, the SDK, the server and
the workers) can load it without any driver.
"""

from ._codec import CodecError as CodecError
from ._codec import WireCodec as WireCodec
from ._codec import make_wire_converter as make_wire_converter

__all__ = ["CodecError", "WireCodec", "make_wire_converter"]
