"""What a tenant's schema is and should be: snapshots of a live catalog, expected schemas per version, drift,
and the clone strategy's template databases (a schema built once, checked, copied).

May import ``history``, ``store`` and the leaves; never ``tenants``, ``fleet``, ``api`` or ``cli``.
"""
