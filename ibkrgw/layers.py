"""Channel layer configuration (kept free of Django imports so settings.py can use it)."""

# channels-redis blocks up to 5 s waiting for a message while redis-py 8 gives up on a socket read
# after 5 s by default: a longer read timeout keeps idle consumers alive.
REDIS_SOCKET_TIMEOUT_S = 15


def redis_channel_layer(url: str) -> dict:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": url, "socket_timeout": REDIS_SOCKET_TIMEOUT_S}]},
    }
