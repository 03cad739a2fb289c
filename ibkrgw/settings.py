"""Settings for ibkr-gateway.

Every value comes from the environment (or a `.env` file) with a safe default: paper mode,
orders disabled, the built-in simulated IB Gateway. A bad value stops start-up with a message
that names the variable and what it accepts.
"""

import os
import re
import sys
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from ibkrgw.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default=str(default)).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of: true, false, 1, 0, yes, no, on, off")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.str(name, default=default).strip().lower()
    if raw not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not allowed; use one of: {', '.join(choices)}")
    return raw


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ImproperlyConfigured(f"{name}={value} is out of range [{minimum}, {maximum}]")
    return value


def env_decimal(name: str, default: str, *, minimum: Decimal = Decimal("0")) -> Decimal:
    raw = env.str(name, default=default).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a decimal number") from None
    if not value.is_finite() or value <= minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number greater than {minimum}")
    return value


# ---------------------------------------------------------------------------
# Trading safety
# ---------------------------------------------------------------------------
TRADING_MODE = env_choice("TRADING_MODE", "paper", ("paper", "live"))
ORDERS_ENABLED = env_bool("ORDERS_ENABLED", False)
LIVE_TRADING_OVERRIDE_FILE = env.str("LIVE_TRADING_OVERRIDE_FILE", default="").strip() or None

# Orders from these actor kinds wait in `pending_approval` until an operator approves them in the
# admin (e.g. "mcp" to hold every agent order); unapproved orders expire after APPROVAL_TTL_S.
APPROVAL_REQUIRED_FOR = frozenset(
    kind.strip().lower() for kind in env.list("APPROVAL_REQUIRED_FOR", default=[]) if kind.strip()
)
if APPROVAL_REQUIRED_FOR - {"mcp", "api_key", "user"}:
    raise ImproperlyConfigured(
        f"APPROVAL_REQUIRED_FOR has {sorted(APPROVAL_REQUIRED_FOR - {'mcp', 'api_key', 'user'})}; "
        "use a comma-separated list of: mcp, api_key, user"
    )
APPROVAL_TTL_S = env_int("APPROVAL_TTL_S", 300, minimum=5)
# Four eyes: a held order placed by a console user is approved by another user, never by its placer.
APPROVAL_SECOND_PERSON = env_bool("APPROVAL_SECOND_PERSON", True)
# The console's equity chart: one account snapshot per interval while connected, kept this many days.
ACCOUNT_SNAPSHOT_INTERVAL_S = env_int("ACCOUNT_SNAPSHOT_INTERVAL_S", 60, minimum=1)
ACCOUNT_SNAPSHOT_KEEP_DAYS = env_int("ACCOUNT_SNAPSHOT_KEEP_DAYS", 30, minimum=1)

# ---------------------------------------------------------------------------
# IB connection
# ---------------------------------------------------------------------------
IB_GATEWAY = env.str("IB_GATEWAY", default="sim").strip()
if IB_GATEWAY != "sim":
    _host, _, _port = IB_GATEWAY.rpartition(":")
    if not _host or not _port.isdigit() or not 0 < int(_port) < 65536:
        raise ImproperlyConfigured(
            f"IB_GATEWAY={IB_GATEWAY!r} is not allowed; use 'sim' or HOST:PORT (e.g. 127.0.0.1:4002)"
        )
IB_SIM_PORT = env_int("IB_SIM_PORT", 4010, minimum=0, maximum=65535)
IB_SIM_SEED = env_int("IB_SIM_SEED", 7, minimum=0)
IB_CLIENT_ID = env_int("IB_CLIENT_ID", 1, minimum=0, maximum=2**31 - 1)
IB_MCP_CLIENT_ID = env_int("IB_MCP_CLIENT_ID", IB_CLIENT_ID + 1, minimum=0, maximum=2**31 - 1)
# Each `manage.py mcp` process claims the first free id from IB_MCP_CLIENT_ID on, among this many.
IB_MCP_CLIENT_ID_COUNT = env_int("IB_MCP_CLIENT_ID_COUNT", 32, minimum=1, maximum=1000)
# MCP read-only mode: tools that place, change or cancel orders are not offered at all.
MCP_READ_ONLY = env_bool("MCP_READ_ONLY", False)
IB_ACCOUNT = env.str("IB_ACCOUNT", default="").strip() or None
IB_CONNECT_TIMEOUT = env_int("IB_CONNECT_TIMEOUT", 10, minimum=1, maximum=600)
IB_REQUEST_TIMEOUT = env_int("IB_REQUEST_TIMEOUT", 10, minimum=1, maximum=600)
MARKET_DATA_TYPE = env_int("MARKET_DATA_TYPE", 1, minimum=1, maximum=4)
IB_THROTTLE = env_bool("IB_THROTTLE", True)
# Without a live market-data subscription for a contract, answer with IB's delayed data (marked as
# such in market_data_type/delayed) instead of failing with no_market_data.
DELAYED_DATA_FALLBACK = env_bool("DELAYED_DATA_FALLBACK", True)
QUOTE_STALE_AFTER_S = env_int("QUOTE_STALE_AFTER_S", 10, minimum=1)
# IB's market-data lines: how many contracts the account may stream at once (100 unless IB granted more).
# Streams (websocket watchers, REST stream holds) get all but MARKET_DATA_LINES_RESERVED of them, which stay
# free for snapshots (the prices the order gates check, REST quotes): a flood of watchers can neither make
# IB refuse an order's price (error 101) nor churn resubscriptions until IB's pacing cuts the connection.
IB_MARKET_DATA_LINES = env_int("IB_MARKET_DATA_LINES", 100, minimum=2, maximum=100_000)
MARKET_DATA_LINES_RESERVED = env_int("MARKET_DATA_LINES_RESERVED", 10, minimum=1, maximum=IB_MARKET_DATA_LINES - 1)
# "exchange": orders are checked against exchange calendars (closed markets, OPG after the open, MOC
# after the cut-off). The built-in simulated market never closes, so "always" is its default.
TRADING_HOURS = env_choice("TRADING_HOURS", "always" if IB_GATEWAY == "sim" else "exchange", ("exchange", "always"))
# Which web process owns the IB connection when several run (scale-out). "auto": with a
# Redis CHANNEL_LAYER_URL the processes elect one owner through a database lease (renewed every
# IB_LEASE_RENEW_S, taken over IB_LEASE_TTL_S after the owner stops renewing) and the others reach it
# through the channel layer; without Redis every process owns its own connection. "always" / "never":
# fixed roles (one "always" process, the others "never"; do not mix them with "auto").
IB_CONNECTION_OWNER = env_choice("IB_CONNECTION_OWNER", "auto", ("auto", "always", "never"))
IB_LEASE_TTL_S = env_int("IB_LEASE_TTL_S", 10, minimum=2, maximum=300)
IB_LEASE_RENEW_S = env_int("IB_LEASE_RENEW_S", 2, minimum=1, maximum=150)
if IB_LEASE_RENEW_S * 2 > IB_LEASE_TTL_S:
    raise ImproperlyConfigured(
        f"IB_LEASE_RENEW_S={IB_LEASE_RENEW_S} must be at most half of IB_LEASE_TTL_S={IB_LEASE_TTL_S}"
    )

# ---------------------------------------------------------------------------
# Pre-trade risk limits (conservative by default)
# ---------------------------------------------------------------------------
RISK_MAX_ORDER_QUANTITY = env_decimal("RISK_MAX_ORDER_QUANTITY", "1000")
RISK_MAX_ORDER_NOTIONAL = env_decimal("RISK_MAX_ORDER_NOTIONAL", "100000")
RISK_PRICE_COLLAR_PCT = env_decimal("RISK_PRICE_COLLAR_PCT", "5")
RISK_MAX_ORDERS_PER_MINUTE = env_int("RISK_MAX_ORDERS_PER_MINUTE", 30, minimum=1)
RISK_DUPLICATE_WINDOW_S = env_int("RISK_DUPLICATE_WINDOW_S", 5, minimum=0)

# ---------------------------------------------------------------------------
# Django
# ---------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-change-me-for-any-shared-deployment")
# The ledger's seal key (docs/audit.md): kept outside the database, so that someone who can write the
# database but does not hold it cannot forge a ledger row that verifies. Unset: derived from SECRET_KEY
# (rotating SECRET_KEY then needs its old value in LEDGER_SEAL_KEY_FALLBACKS). Fallbacks: earlier values
# of LEDGER_SEAL_KEY (or of SECRET_KEY), still accepted when seals are verified, never used for new ones.
LEDGER_SEAL_KEY = env.str("LEDGER_SEAL_KEY", default="").strip() or None
if LEDGER_SEAL_KEY is not None and len(LEDGER_SEAL_KEY) < 32:
    raise ImproperlyConfigured("LEDGER_SEAL_KEY is too short; use at least 32 characters (e.g. openssl rand -hex 32)")
LEDGER_SEAL_KEY_FALLBACKS = [key.strip() for key in env.list("LEDGER_SEAL_KEY_FALLBACKS", default=[]) if key.strip()]
# The running gateway re-verifies its ledger's seals a slice at a time (audit/watch.py): this many seals,
# and as many rows, every LEDGER_WATCH_EVERY_S seconds. 0 turns the watch off. Small steps often: a step holds
# the process's CPU for about 80 microseconds a seal, and orders placed meanwhile wait that much longer.
LEDGER_WATCH_ROWS = env_int("LEDGER_WATCH_ROWS", 100, minimum=0, maximum=100_000)
LEDGER_WATCH_EVERY_S = env_int("LEDGER_WATCH_EVERY_S", 1, minimum=1, maximum=86_400)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=["http://127.0.0.1:8000", "http://localhost:8000"])

INSTALLED_APPS = [
    # daphne's app gives `runserver` websockets, and installs Twisted's reactor as it loads; the production
    # server (python -m ibkrgw.serve, uvicorn) needs neither, and starts a second faster without them.
    *([] if os.environ.get("IBKRGW_SERVER") == "uvicorn" else ["daphne"]),
    "ibkrgw.apps.OperatorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_prometheus",
    "ibkrgw",
    "audit",
    "brokers",
    "marketdata",
    "orders",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "ibkrgw.middleware.CorrelationIdMiddleware",
    "ibkrgw.middleware.ApiErrorShapeMiddleware",
    "ibkrgw.middleware.RequestLimitsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "ibkrgw.middleware.ApiCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "ibkrgw.middleware.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "ibkrgw.urls"
ASGI_APPLICATION = "ibkrgw.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database: SQLite tuned for durability and concurrent writers; DATABASE_URL for anything else
# ---------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=30000;",
        }
    )
    # Tests use a file, not shared memory: the IB worker, the recorder and subprocesses (mcp, killed
    # gateways) must see the same database with WAL, as in production.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str(
            "TEST_DATABASE_NAME", default=str(Path(tempfile.gettempdir()) / f"ibkrgw-test-{os.getpid()}.sqlite3")
        )
    }
# Keep connections open between requests: opening one (and its PRAGMAs) costs more than a request.
DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("DB_CONN_MAX_AGE", 600, minimum=0))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Users sign in only while their account matches its MAC (ibkrgw.users).
AUTHENTICATION_BACKENDS = ["ibkrgw.auth.SealedUserBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/admin/login/"

# ---------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------
CHANNEL_LAYER_URL = env.str("CHANNEL_LAYER_URL", default="").strip() or None
if CHANNEL_LAYER_URL:
    if not CHANNEL_LAYER_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"CHANNEL_LAYER_URL={CHANNEL_LAYER_URL!r} is not allowed; use redis://HOST:PORT/DB")
    CHANNEL_LAYERS = {"default": redis_channel_layer(CHANNEL_LAYER_URL)}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# ---------------------------------------------------------------------------
# REST framework and OpenAPI
# ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ibkrgw.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["ibkrgw.auth.HasReadScope"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ibkrgw.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": ["ibkrgw.auth.ReadRateThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "ibkrgw.parsers.JSONParser",
        "ibkrgw.parsers.FormParser",
        "ibkrgw.parsers.MultiPartParser",
    ],
    # Escape non-ASCII in JSON output: a response can never fail to encode, whatever a client sent.
    "UNICODE_JSON": False,
    "DEFAULT_RENDERER_CLASSES": ["ibkrgw.web.render.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
}

# Threads that run HTTP requests (middleware and view), each with its own database connection: a
# view waiting on IB or on the order pipeline holds one, so keep room for the slow ones.
WEB_THREADS = env_int("WEB_THREADS", 32, minimum=2, maximum=512)

# ---------------------------------------------------------------------------
# Request limits (every door: REST, websockets, MCP)
# ---------------------------------------------------------------------------
# Bodies over this many bytes answer 413 request_too_large before anything reads them.
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", 256 * 1024, minimum=1024, maximum=100 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BODY_BYTES
# JSON (bodies, websocket frames, MCP arguments) nested deeper than this answers 400 invalid_request.
REQUEST_MAX_JSON_DEPTH = env_int("REQUEST_MAX_JSON_DEPTH", 20, minimum=2, maximum=200)

# ---------------------------------------------------------------------------
# /metrics: loopback clients only, unless a token is set (then `Authorization: Bearer <token>` from anywhere)
# ---------------------------------------------------------------------------
METRICS_TOKEN = env.str("METRICS_TOKEN", default="").strip() or None
if METRICS_TOKEN is not None and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN is too short; use at least 16 characters (e.g. openssl rand -hex 24)")
# Reads per API key (or user) per period; orders are limited by RISK_MAX_ORDERS_PER_MINUTE instead.
API_READ_RATE = env.str("API_READ_RATE", default="1200/min")
if not re.fullmatch(r"\d+/(s|sec|m|min|h|hour|d|day)", API_READ_RATE):
    raise ImproperlyConfigured(f"API_READ_RATE={API_READ_RATE!r} is not allowed; use N/sec, N/min, N/hour or N/day")
# Seconds a verified API key is trusted without checking the database again: a revocation made in
# another process (`manage.py apikey revoke`, another web process) takes effect within this time.
API_KEY_CACHE_S = env_int("API_KEY_CACHE_S", 5, minimum=0, maximum=300)
SPECTACULAR_SETTINGS = {
    "TITLE": "ibkr-gateway API",
    "DESCRIPTION": "Market data, account state and safe order execution against IB Gateway/TWS.",
    "VERSION": "1.0.0",
    # Swagger UI and ReDoc from this server's static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ibkrgw.openapi.postprocess_schema",
    ],
}
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# Structured JSON logs for machines, plain text for a person at a terminal.
LOG_FORMAT = env_choice("LOG_FORMAT", "auto", ("auto", "json", "text"))
if LOG_FORMAT == "auto":
    LOG_FORMAT = "text" if sys.stderr.isatty() else "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation": {"()": "ibkrgw.logging.CorrelationIdFilter"},
        "invalid_utf8_frame": {"()": "ibkrgw.servers.InvalidUtf8FrameFilter"},
        "answered_request_error": {"()": "ibkrgw.logging.AnsweredRequestErrorFilter"},
        "broker_outage_response": {"()": "ibkrgw.logging.BrokerOutageResponseFilter"},
    },
    # Both formatters redact secrets (API keys in URLs or headers, tokens, passwords) from every line.
    "formatters": {
        "text": {
            "()": "ibkrgw.logging.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s",
        },
        "json": {
            "()": "ibkrgw.logging.RedactingJsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["correlation"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "ib_async": {"level": "WARNING"},
        # An unknown symbol is answered to its client (contract_not_found), not an error of the gateway's.
        "ib_async.wrapper": {"filters": ["answered_request_error"]},
        # uvicorn logs each text frame that is not UTF-8 with a traceback: one line a minute at most.
        "uvicorn.error": {"filters": ["invalid_utf8_frame"]},
        # While the broker is away, each 503/504 answer would be an ERROR line: one per status per 10 s.
        "django.request": {"filters": ["broker_outage_response"]},
    },
}
