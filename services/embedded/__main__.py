"""``python -m services.embedded demo|serve``."""

from services.embedded.main import main

main()
