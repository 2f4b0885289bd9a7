"""Operations over many tenants at once: rollouts (driver and catalog queries) and the servers' health.

May import ``tenants`` and everything below it; never ``api`` or ``cli``.
"""
