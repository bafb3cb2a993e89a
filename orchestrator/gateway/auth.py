"""Bearer tokens with a scope: `read` may look, `operator` may also start and act on sagas.

Tokens come from settings (`SAGAWIRE_API_TOKENS="token1:operator,token2:read"`), are compared in
constant time, and never logged. No token at all is accepted only when the operator turned
authentication off explicitly (`--no-auth`, for local use).
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from enum import StrEnum
from typing import Final


class Scope(StrEnum):
    READ = "read"
    OPERATOR = "operator"


_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's token68: what may follow `Bearer ` in an Authorization header."""
GRANTS: Final = {Scope.READ: {Scope.READ}, Scope.OPERATOR: {Scope.READ, Scope.OPERATOR}}


class TokenSyntaxError(ValueError):
    """The tokens setting cannot be read; the message never quotes a token."""


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The accepted tokens and their scopes; `open` lets every request through (no auth)."""

    scopes: tuple[tuple[bytes, Scope], ...] = ()
    open: bool = False

    @classmethod
    def parse(cls, text: str) -> Tokens:
        """`token:scope` pairs separated by commas; scope `read` or `operator`."""
        pairs = []
        for number, item in enumerate(text.split(","), start=1):
            token, sep, scope = item.strip().rpartition(":")
            if not sep or not token:
                raise TokenSyntaxError(f"API token {number}: write it as TOKEN:SCOPE")
            if scope not in Scope.__members__.values():
                raise TokenSyntaxError(
                    f"API token {number}: scope must be 'read' or 'operator', got {scope[:20]!r}"
                )
            if len(token) < 16:
                raise TokenSyntaxError(f"API token {number}: use at least 16 characters")
            if not _B64TOKEN.fullmatch(token):
                raise TokenSyntaxError(
                    f"API token {number}: use only letters, digits and - . _ ~ + / = "
                    "(what an Authorization: Bearer header carries)"
                )
            pairs.append((token.encode(), Scope(scope)))
        return cls(tuple(pairs))

    def scope_of(self, token: str | None) -> Scope | None:
        """The scope the token grants, None for an unknown or missing one."""
        if self.open:
            return Scope.OPERATOR
        if not token:
            return None
        given = token.encode()
        found = None
        for known, scope in self.scopes:  # every comparison runs: no early exit to time
            if hmac.compare_digest(known, given):
                found = scope
        return found

    def allows(self, token: str | None, needed: Scope) -> bool | None:
        """True if the token grants `needed`; False for a known token without it; None for no
        known token at all (401 rather than 403)."""
        scope = self.scope_of(token)
        if scope is None:
            return None
        return needed in GRANTS[scope]
