"""Where state lives: the control catalog, asyncpg connections and locks, the embedded PostgreSQL.

``db`` (the only module that imports ``asyncpg.exceptions``: SQLSTATE classification, lost connections, servers),
``locks`` (per-tenant locks and slots),
``catalog`` (the service's own database: queries as constants, DDL in ``sql/catalog_NNNN.sql``), ``queue`` (its
queue of asynchronous creations), ``connections``
(kept idle connections to tenant databases, for reads), ``embedded`` (the zero-config private cluster), ``audit``
(who is acting). May import only the leaves (``config``, ``errors``, ``identifiers``, ``logs``) and asyncpg.
"""
