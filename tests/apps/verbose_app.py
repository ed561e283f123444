"""numbered_app with every logger at DEBUG (the storage SDK's request logs included): for secret-leak tests."""
import logging

logging.basicConfig(level=logging.DEBUG)

from tests.apps.numbered_app import app  # noqa: E402,F401
