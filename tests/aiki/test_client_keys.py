"""An API key as people paste it: spaces and line breaks around it are dropped; anything
else that no key has is refused at once with a message that never quotes the key, which
the CLI reports as an authentication failure (exit 5), not as a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import aiki
from aiki.client import auth_headers

KEY = "aiki_abcdefghijkl_" + "S" * 43


@pytest.mark.parametrize("pasted", [f"{KEY}\n", f"  {KEY} ", f"\t{KEY}\r\n"])
def test_spaces_and_line_breaks_around_a_key_are_dropped(pasted: str) -> None:
    assert auth_headers(pasted) == {"authorization": f"Bearer {KEY}"}
    client = aiki.Client("http://127.0.0.1:1", api_key=pasted, session=False)
    assert client._headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("pasted", [f"{KEY[:20]} {KEY[20:]}", f"{KEY}\nsecond line",
                                    f"{KEY}é", f"{KEY}\x00", "   "])  # fmt: skip
def test_a_key_no_key_could_be_is_refused_without_being_quoted(pasted: str) -> None:
    with pytest.raises(aiki.UnauthenticatedError) as refused:
        aiki.Client("http://127.0.0.1:1", api_key=pasted, session=False)
    assert "S" * 10 not in str(refused.value)
    assert not isinstance(refused.value, aiki.UnavailableError)  # (not retryable)


def test_the_cli_exits_5_without_printing_the_key() -> None:
    env = {**os.environ, "AIKI_API_KEY": f"{KEY[:20]} {KEY[20:]}",
           "AIKI_SERVER_URL": "http://127.0.0.1:1"}  # fmt: skip
    shown = subprocess.run([sys.executable, "-m", "aiki", "runs", "list"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert shown.returncode == 5, shown.stderr
    assert "S" * 10 not in shown.stdout + shown.stderr
    assert "Traceback" not in shown.stderr
    assert "not one" in shown.stderr
