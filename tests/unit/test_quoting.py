"""String literals and credentials: quote_literal (role passwords cannot be bind parameters), the SCRAM verifier
sent instead of a password, and the connection URL handed to a tenant. A round trip of both quoting helpers
through a real server is in tests/api/test_fuzz.py."""

from __future__ import annotations

import base64
import re
import string

import pytest

from service.identifiers import quote_literal
from service.tenants.credentials import connection_url, new_password, scram_sha256


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("", "''"),
        ("pw", "'pw'"),
        ("O'Brien", "'O''Brien'"),
        ("'", "''''"),
        ("'; DROP ROLE postgres; --", "'''; DROP ROLE postgres; --'"),
        ('"; DROP DATABASE x; --', "'\"; DROP DATABASE x; --'"),
        ("$$; SELECT 1; $$", "'$$; SELECT 1; $$'"),
        # Fullwidth look-alikes (U+FF21.., U+FF1B, U+FF07) are ordinary characters to PostgreSQL: nothing to escape.
        ("\u00fc \uff21\uff22\uff23 \uff1b\uff07", "'\u00fc \uff21\uff22\uff23 \uff1b\uff07'"),
        ("line\nbreak\ttab", "'line\nbreak\ttab'"),
        ("back\\slash", "E'back\\\\slash'"),
        ("\\'", "E'\\\\'''"),
        ("\\", "E'\\\\'"),
    ],
)
def test_quote_literal(value: str, quoted: str) -> None:
    assert quote_literal(value) == quoted


@pytest.mark.parametrize("value", ["\x00", "a\x00b", "pw\x00'; DROP ROLE x; --"])
def test_quote_literal_refuses_nul(value: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_literal(value)


def test_quote_literal_never_lets_a_quote_end_the_string() -> None:
    hostile = "a'b''c'''d\\'e" * 50
    quoted = quote_literal(hostile)
    inner = quoted.removeprefix("E")[1:-1]
    # Inside the literal every quote comes in a pair: nothing can close it early.
    assert re.fullmatch(r"(?:[^']|'')*", inner)


def test_new_passwords_are_long_random_and_need_no_escaping() -> None:
    seen = {new_password() for _ in range(200)}
    assert len(seen) == 200
    allowed = set(string.ascii_letters + string.digits + "-_")
    for password in seen:
        assert len(password) == 43
        assert set(password) <= allowed
        assert quote_literal(password) == f"'{password}'"


def test_scram_verifier_matches_postgresql() -> None:
    # Computed by PostgreSQL 15 for CREATE ROLE ... PASSWORD 'pencil' (password_encryption = scram-sha-256).
    expected = (
        "SCRAM-SHA-256$4096:2okbCBn2pozy1EdxdLG6ew==$vk0iSFjNodPOW8fddKDb/8RoEuaC/4ERlin9lqzT4iY="
        ":+MzkbZdx51VAj/m73vW8qXE+GAgPo7b5ZWgwUl4vctI="
    )
    salt = base64.b64decode("2okbCBn2pozy1EdxdLG6ew==")
    assert scram_sha256("pencil", salt=salt) == expected


def test_scram_verifier_has_a_fresh_salt_and_never_the_password() -> None:
    password = new_password()
    first, second = scram_sha256(password), scram_sha256(password)
    assert first != second
    assert password not in first
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", first)


def test_scram_refuses_non_ascii_passwords() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        scram_sha256("pässword")


@pytest.mark.parametrize(
    ("admin", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://tenant_acme:pw@127.0.0.1:5432/tenant_acme"),
        ("postgresql://admin:s3cret@db.internal/postgres", "postgresql://tenant_acme:pw@db.internal:5432/tenant_acme"),
        ("postgres://u@[::1]:6543/x", "postgresql://tenant_acme:pw@[::1]:6543/tenant_acme"),
        (
            "postgresql://u:p@h:5433/d?sslmode=require&user=admin&password=x",
            "postgresql://tenant_acme:pw@h:5433/tenant_acme?sslmode=require",
        ),
    ],
)
def test_connection_url_takes_host_and_port_only_from_the_admin_url(admin: str, expected: str) -> None:
    url = connection_url(admin, "tenant_acme", "pw", "tenant_acme")
    assert url == expected
    assert "s3cret" not in url
    assert "admin" not in url


def test_connection_url_escapes_what_a_url_cannot_hold() -> None:
    url = connection_url("postgresql://h:1/d", "Tenant-1$", "a:b@c/d", "Tenant-1$")
    assert url == "postgresql://Tenant-1%24:a%3Ab%40c%2Fd@h:1/Tenant-1%24"
