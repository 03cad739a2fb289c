# ibkr-gateway: its web server (python -m ibkrgw.serve: uvicorn, HTTP and websockets) on port 8000 with the
# same safe defaults (paper mode, orders disabled, built-in simulated IB Gateway). Point IB_GATEWAY at a real IB Gateway to use one.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////data/db.sqlite3 \
    ALLOWED_HOSTS=127.0.0.1,localhost,0.0.0.0

WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/base.txt
COPY . .
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /data && chown app /data
USER app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s CMD python manage.py healthcheck || exit 1
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py bootstrap && exec python -m ibkrgw.serve --host 0.0.0.0 --port 8000"]
