"""tenant-provisioner: the one door through which per-tenant PostgreSQL databases are born, upgraded and inspected."""

__version__ = "0.1.0"
