"""The migration engine: a folder of files as its tool wrote them, and how they reach one tenant database.

``migrations`` (files, versions, checksums, the plan of transaction batches), ``journal`` (Drizzle's
``meta/_journal.json``), ``statements`` (what a statement needs, by pglast), ``runner`` (applies a plan on one
connection), ``table`` (the tenant-side ``_tenants`` history), ``drizzle`` (drizzle-kit's own history table),
``checks``, ``syntax`` and ``lint`` (``tenantctl check``), ``scaffold`` (``tenantctl new``,
``check --fix-journal``); ``layouts`` (one loader per tool that writes folders:
golang-migrate, Flyway, dbmate, goose, Prisma), ``tooltables`` (each such tool's own history table, written beside
every file and read for adoption) and ``origin`` (a file's identity in its tool). Knows nothing of the catalog, of
other tenants or of HTTP: may import ``store.db`` and the leaves, never ``store.catalog``, ``schema``, ``tenants``,
``fleet``, ``api`` or ``cli``.
"""
