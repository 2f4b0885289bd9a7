"""``python -m service`` is ``tenantctl``."""

from service.cli import main

main()
