"""System checks for dangerous settings (the configuration gate). Ids are stable."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security)
def trading_settings_check(app_configs=None, **kwargs):
    problems = []
    live = settings.TRADING_MODE == "live"
    if live and settings.ORDERS_ENABLED and not settings.LIVE_TRADING_OVERRIDE_FILE:
        problems.append(
            Error(
                "Live trading with orders enabled needs LIVE_TRADING_OVERRIDE_FILE.",
                hint="Set LIVE_TRADING_OVERRIDE_FILE to a path; orders are sent only while that file exists.",
                id="brokers.E001",
            )
        )
    if live and settings.IB_GATEWAY == "sim":
        problems.append(
            Error(
                "TRADING_MODE=live cannot use the simulated gateway.",
                hint="Set IB_GATEWAY=HOST:PORT of a real IB Gateway/TWS, or TRADING_MODE=paper.",
                id="brokers.E002",
            )
        )
    if live and settings.IB_ACCOUNT and settings.IB_ACCOUNT.upper().startswith("DU"):
        problems.append(
            Error(
                f"TRADING_MODE=live with the paper account {settings.IB_ACCOUNT}.",
                hint="Live mode never trades a paper (DU...) account; fix IB_ACCOUNT or TRADING_MODE.",
                id="brokers.E003",
            )
        )
    if not live and settings.IB_ACCOUNT and not settings.IB_ACCOUNT.upper().startswith("DU"):
        problems.append(
            Error(
                f"TRADING_MODE=paper with the non-paper account {settings.IB_ACCOUNT}.",
                hint="Paper mode only trades paper (DU...) accounts.",
                id="brokers.E004",
            )
        )
    if settings.IB_CLIENT_ID == settings.IB_MCP_CLIENT_ID:
        problems.append(
            Error(
                "IB_CLIENT_ID and IB_MCP_CLIENT_ID are equal; IB refuses a second connection with the same id.",
                id="brokers.E005",
            )
        )
    if not settings.IB_THROTTLE and settings.IB_GATEWAY != "sim":
        problems.append(
            Warning(
                "IB_THROTTLE=false against a real gateway: IB disconnects clients sending over 50 messages/s.",
                id="brokers.W001",
            )
        )
    if settings.IB_CONNECTION_OWNER == "never" and not settings.CHANNEL_LAYER_URL:
        problems.append(
            Error(
                "IB_CONNECTION_OWNER=never without a Redis channel layer: this process could never reach the broker.",
                hint="Set CHANNEL_LAYER_URL=redis://HOST:PORT/DB (shared with the owning process), or use auto.",
                id="brokers.E007",
            )
        )
    if settings.SECRET_KEY.startswith("dev-only") and not settings.DEBUG and settings.TRADING_MODE == "live":
        problems.append(Error("Set SECRET_KEY before trading live.", id="brokers.E006"))
    return problems
