"""Tenant ids, database-name prefixes and identifier quoting: the gate between user input and SQL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.errors import InvalidTenantId
from service.identifiers import (
    database_name,
    is_tenant_id,
    quote_ident,
    validate_database_name,
    validate_prefix,
    validate_tenant_id,
)

VALID_IDS = ["a", "0", "16", "acme", "acme_studio", "a_", "9lives", "x" * 40, "a1_b2_c3"]
INVALID_IDS: list[object] = [
    "",
    "Acme",
    "ACME",
    "-x",
    "_x",
    "x" * 41,
    "a b",
    "ü",
    "a;drop",
    "a-b",
    "a.b",
    "a\n",
    "\na",
    "a\x00",
    'a"b',
    "a'b",
    16,
    None,
    1.5,
    ["a"],
    b"acme",
]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_tenant_ids(value: str) -> None:
    assert is_tenant_id(value)
    assert validate_tenant_id(value) == value


@pytest.mark.parametrize("value", INVALID_IDS)
def test_invalid_tenant_ids(value: object) -> None:
    assert not is_tenant_id(value)
    with pytest.raises(InvalidTenantId) as info:
        validate_tenant_id(value)
    assert info.value.code == "invalid_tenant_id"
    assert "1 to 40 characters" in info.value.message


def test_length_limits_are_exactly_40() -> None:
    assert is_tenant_id("a" * 40)
    assert not is_tenant_id("a" * 41)
    assert is_tenant_id("1" * 40)


def test_invalid_id_detail_is_truncated() -> None:
    with pytest.raises(InvalidTenantId) as info:
        validate_tenant_id("A" * 10_000)
    assert len(info.value.details["value"]) <= 80


@pytest.mark.parametrize("prefix", ["tenant_", "t", "_", "t" * 23, "tenants_v2_", "a1"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "t" * 24, "1tenant_", "Tenant_", "ten-ant", "ten ant", 'a"', "ü"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="database prefix"):
        validate_prefix(prefix)


def test_longest_prefix_and_id_fit_postgres_limit() -> None:
    name = database_name("p" * 23, "i" * 40)
    assert len(name) == 63  # NAMEDATALEN - 1: PostgreSQL would silently truncate anything longer


def test_database_name_of_numeric_string_id() -> None:
    assert database_name("tenant_", "16") == "tenant_16"
    assert database_name("tenant_", "acme") == "tenant_acme"


def test_database_name_validates_both_parts() -> None:
    with pytest.raises(InvalidTenantId):
        database_name("tenant_", "Acme")
    with pytest.raises(ValueError, match="database prefix"):
        database_name("Tenant_", "acme")


def test_settings_refuse_a_bad_prefix_and_catalog_name() -> None:
    with pytest.raises(ValidationError):
        Settings(db_prefix="t" * 24)
    with pytest.raises(ValidationError):
        Settings(db_prefix="Bad")
    with pytest.raises(ValidationError):
        Settings(catalog_database='cat"; DROP')
    assert Settings(db_prefix="t" * 23).db_prefix == "t" * 23


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("acme", '"acme"'),
        ("Acme", '"Acme"'),
        ('a"b', '"a""b"'),
        ('"', '""""'),
        ('x"; DROP DATABASE y; --', '"x""; DROP DATABASE y; --"'),
        ("", '""'),
        ("ü", '"ü"'),
    ],
)
def test_quote_ident(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_quote_ident_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_ident("a\x00b")


@pytest.mark.parametrize("name", ["tenant_acme", "Tenant-1", "a$b", "x" * 63])
def test_valid_database_names(name: str) -> None:
    assert validate_database_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 64, "a b", 'a"b', "a;b", "-a", "$a", "a\x00"])
def test_invalid_database_names(name: str) -> None:
    with pytest.raises(ValueError, match="unsupported database name"):
        validate_database_name(name)
