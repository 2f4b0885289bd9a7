"""The tenant lifecycle, one module per operation: ``create``, ``migrate``, ``repair``, ``delete``, ``rotate``,
``recover``, ``adopt``; their shared parts (``steps``: the tenant lock and the recorded operation; ``owned``: undoing
what the catalog records as made; ``placement``, ``roles``, ``credentials``); reads (``reads``, ``status``,
``cache``). ``provisioner.Provisioner`` is the facade the API, the CLI and the fleet call.

May import ``schema``, ``history``, ``store`` and the leaves; never ``fleet``, ``api`` or ``cli``.
"""
