"""Template names (service.template): derived from the catalog name and the files, always a valid name."""

from __future__ import annotations

import shutil
from pathlib import Path

from service.history import migrations
from service.schema.template import template_name, template_prefix
from tests.conftest import FIXTURES

NOTES = 'CREATE TABLE "notes" ("id" serial PRIMARY KEY);\n'


def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ok"
    shutil.copytree(FIXTURES / "ok", folder)
    return folder


def test_name_follows_the_files_not_the_seeds(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    before = template_name("tenants_catalog", migrations.load(folder))
    assert before.startswith("tenants_catalog_tpl_")
    assert len(before) == len("tenants_catalog_tpl_") + 8

    (folder / "seeds" / "0002_more.sql").write_text("SELECT 1;\n")
    assert template_name("tenants_catalog", migrations.load(folder)) == before

    (folder / "0002_notes.sql").write_text(NOTES)
    added = template_name("tenants_catalog", migrations.load(folder))
    assert added != before

    (folder / "0002_notes.sql").write_text(NOTES + "-- edited\n")
    assert template_name("tenants_catalog", migrations.load(folder)) not in (before, added)


def test_a_long_catalog_name_still_fits(tmp_path: Path) -> None:
    catalog = "c" * 63
    name = template_name(catalog, migrations.load(copy(tmp_path)))
    assert name.startswith(template_prefix(catalog))
    assert len(name) + len("_123456") <= 63  # the temporary name of a build fits too
