"""Passwords out of anything that may be shown: logs, errors, CLI output.

`redact("amqp://app:s3cr@t@host/")` is `"amqp://app:***@host/"`: the password runs to the last
`@` before the host, so one holding an `@` of its own is hidden whole.
"""

from __future__ import annotations

import re
from typing import Final

_URL_PASSWORD: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1***@", text)
