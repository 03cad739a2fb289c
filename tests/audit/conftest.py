# Until tests/conftest.py lists "audit.testing" in pytest_plugins, bring its autouse fixture in here.
from audit.testing import ledger_triggers_flushable  # noqa: F401
