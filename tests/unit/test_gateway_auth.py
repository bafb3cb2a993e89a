"""The gateway's bearer tokens: parsing the setting, scopes, and no token quoted in an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.gateway.auth import Scope, Tokens, TokenSyntaxError

OPERATOR = "op-0123456789abcdef"
READER = "rd-0123456789abcdef"


def test_an_operator_token_may_read_and_act_a_read_token_only_read():
    tokens = Tokens.parse(f"{OPERATOR}:operator, {READER}:read")
    assert tokens.allows(OPERATOR, Scope.OPERATOR) is True
    assert tokens.allows(OPERATOR, Scope.READ) is True
    assert tokens.allows(READER, Scope.READ) is True
    assert tokens.allows(READER, Scope.OPERATOR) is False


@pytest.mark.parametrize("token", [None, "", "unknown-0123456789", OPERATOR[:-1], OPERATOR + "x"])
def test_no_token_or_an_unknown_one_is_not_a_caller(token):
    assert Tokens.parse(f"{OPERATOR}:operator").allows(token, Scope.READ) is None


def test_without_auth_everyone_may_act():
    assert Tokens(open=True).allows(None, Scope.OPERATOR) is True


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("secret-0123456789abcdef", "write it as TOKEN:SCOPE"),
        (":operator", "write it as TOKEN:SCOPE"),
        ("secret-0123456789abcdef:admin", "scope must be 'read' or 'operator'"),
        ("short:read", "at least 16 characters"),
        ("secret 0123456789abcdef:read", "only letters, digits"),
        ("secret-0123456789abcdé:read", "only letters, digits"),
        (f"{OPERATOR}:operator,", "API token 2"),
    ],
)
def test_a_bad_setting_is_refused_without_quoting_a_token(text, problem):
    with pytest.raises(TokenSyntaxError, match=problem) as refused:
        Tokens.parse(text)
    assert "secret" not in str(refused.value)
    assert "0123456789" not in str(refused.value)


@given(st.from_regex(r"[A-Za-z0-9\-._~+/]{16,64}", fullmatch=True))
def test_any_token_text_is_found_again_by_its_own_value(token):
    tokens = Tokens.parse(f"{token}:read")
    assert tokens.scope_of(token.strip()) is Scope.READ
