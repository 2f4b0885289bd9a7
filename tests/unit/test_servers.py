"""Several database servers without a database: the settings that name them, and where a new tenant goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import ServerSpec, Settings
from service.errors import DatabaseUnavailable, NoCapacity, ServerFull, UnknownServer
from service.store.db import Server, Servers
from service.tenants.placement import choose

URL_A = "postgresql://admin:secret@db-a.internal:5432/postgres"
URL_B = "postgresql://admin@db-b.internal/postgres?sslmode=require"
TWO = [{"name": "a", "url": URL_A, "capacity": 500}, {"name": "b-2", "url": URL_B}]


def problems(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)  # type: ignore[arg-type]
    return str(caught.value)


def test_no_servers_means_one_default_server_on_the_catalog() -> None:
    settings = Settings()
    assert settings.server_specs == ()
    servers = Servers.configure(Server("postgresql://u@h/postgres", "cat"), settings.server_specs)
    assert servers.names == ["default"]
    assert (servers.first.capacity, servers.first.admin_dsn) == (None, "postgresql://u@h/postgres")


def test_servers_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTS_SERVERS", json.dumps(TWO))
    specs = Settings().server_specs
    assert specs == (ServerSpec("a", URL_A, 500), ServerSpec("b-2", URL_B, None))
    assert "secret" not in repr(specs)  # the admin password never reaches a log line


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_servers_from_a_file(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"servers.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(TWO))
    else:
        path.write_text(f"- name: a\n  url: {URL_A}\n  capacity: 500\n- name: b-2\n  url: {URL_B}\n")
    monkeypatch.setenv("TENANTS_SERVERS_FILE", str(path))
    assert [(s.name, s.capacity) for s in Settings().server_specs] == [("a", 500), ("b-2", None)]


def test_every_problem_is_named_in_one_message() -> None:
    found = problems(
        servers=[
            {"name": "A", "url": URL_A},
            {"name": "b", "url": "mysql://h/db", "capacity": 0},
            {"name": "c", "url": "postgresql://h:99999/x", "capacity": True},
            {"name": "d", "url": URL_A, "capcity": 3},
            {"name": "d", "url": URL_B},
            "e",
        ]
    )
    assert "1 validation error" in found
    for expected in (
        "server 1 (A): name must match",
        "server 2 (b): url must start with postgresql://",
        "server 2 (b): capacity must be a whole number of at least 1",
        "server 3 (c): url is malformed",
        "server 3 (c): capacity must be a whole number",
        "server 4 (d): unknown key 'capcity'",
        "server name 'd' is used more than once",
        "server 6: must be an object",
    ):
        assert expected in found, expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "must be a non-empty list"),
        ("{not json", "not valid JSON"),
        ('[{"name": "a"}]', "url must be a postgresql:// URL"),
        ('[{"name": "a", "url": "postgresql:///db"}]', "url names no host"),
        ('[{"name": "a", "url": "postgresql://h/db", "capacity": "5"}]', "capacity must be a whole number"),
        ('[{"name": "' + "a" * 32 + '", "url": "postgresql://h/db"}]', "name must match"),
    ],
)
def test_refused_lists(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv("TENANTS_SERVERS", value)
    assert message in problems()


def test_unix_socket_url_is_accepted() -> None:
    spec = Settings(servers=[{"name": "a", "url": "postgresql:///postgres?host=/run/postgresql"}]).server_specs
    assert spec[0].name == "a"


def test_servers_and_a_file_at_once_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "servers.yaml"
    path.write_text(json.dumps(TWO))
    assert "not both" in problems(servers=TWO, servers_file=path)


def test_an_unreadable_or_broken_file_is_refused(tmp_path: Path) -> None:
    assert "cannot be read" in problems(servers_file=tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("- name: a\n  url: [unclosed\n")
    assert "not valid YAML or JSON" in problems(servers_file=broken)


# -- placement ---------------------------------------------------------------------------------------------------


def servers(*specs: tuple[str, int | None]) -> Servers:
    catalog = Server("postgresql://u@catalog/postgres", "cat")
    return Servers.configure(catalog, [ServerSpec(name, f"postgresql://u@{name}/postgres", cap) for name, cap in specs])


def test_the_least_loaded_server_with_room_first_configured_on_a_tie() -> None:
    fleet = servers(("a", 2), ("b", None), ("c", 10))
    assert choose(fleet, {}, None).name == "a"
    assert choose(fleet, {"a": 1}, None).name == "b"
    assert choose(fleet, {"a": 1, "b": 1}, None).name == "c"
    assert choose(fleet, {"a": 2, "b": 5, "c": 4}, None).name == "c"  # a is full
    assert choose(fleet, {"a": 2, "b": 4, "c": 4, "gone": 0}, None).name == "b"


def test_a_named_server_is_used_while_it_has_room() -> None:
    fleet = servers(("a", 2), ("b", None))
    assert choose(fleet, {"a": 1, "b": 0}, "a").name == "a"
    with pytest.raises(ServerFull) as full:
        choose(fleet, {"a": 2}, "a")
    assert full.value.details == {"server": "a", "capacity": 2, "tenants": 2}
    with pytest.raises(UnknownServer) as unknown:
        choose(fleet, {}, "z")
    assert unknown.value.details["servers"] == ["a", "b"]


def test_a_server_down_gets_no_new_tenant_while_another_has_room() -> None:
    fleet = servers(("a", 2), ("b", None), ("c", None))
    assert choose(fleet, {"a": 1}, None, down={"b"}).name == "c"
    assert choose(fleet, {"a": 2}, None, down={"b", "c"}).name == "b"  # every server with room is down: tried anyway
    assert choose(fleet, {}, "b", down={"b"}).name == "b"  # named: used (a creation then answers 503)
    assert choose(fleet, {}, None, draining={"a"}, down={"b"}).name == "c"


def test_no_server_with_room() -> None:
    with pytest.raises(NoCapacity) as caught:
        choose(servers(("a", 1), ("b", 2)), {"a": 1, "b": 2}, None)
    assert caught.value.details["servers"] == [
        {"name": "a", "tenants": 1, "capacity": 1},
        {"name": "b", "tenants": 2, "capacity": 2},
    ]


def test_a_tenant_on_a_server_no_longer_configured_is_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        servers(("a", None)).target("default")
    assert caught.value.details == {"server": "default"}


def test_a_target_never_shows_its_url() -> None:
    target = Servers.configure(Server(URL_A, "cat"), [ServerSpec("a", URL_A, 3)]).first
    assert "secret" not in repr(target)
    assert target.maintenance_database == "postgres"
