# syntax=docker/dockerfile:1
# Build wheels in one stage, run as an unprivileged user in a slim one.
# Checked without a container engine: tests/unit/test_dockerfile.py lints this file (hadolint) and
# tests/integration/test_container.py runs the final stage's CMD as it runs here (ENV, USER, WORKDIR, /data).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# /data: the embedded PostgreSQL's data directory (used when TENANTS_DATABASE_URL is unset), owned by the service's
# user so that a fresh volume mounted there is writable. /app stays root's: the service cannot change its own code or
# migrations.
RUN groupadd --system --gid 10001 app \
    && useradd --system --create-home --uid 10001 --gid 10001 app \
    && mkdir /data \
    && chown app:app /data \
    && chmod 0700 /data
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The shipped migrations; mount your own folder over it: -v "$PWD/migrations:/app/migrations:ro".
COPY migrations ./migrations
USER 10001:10001
ENV TENANTS_MIGRATIONS_DIR=/app/migrations \
    TENANTS_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
# Listening on every interface needs TENANTS_ADMIN_TOKEN (or TENANTS_READ_TOKEN): the service refuses otherwise.
CMD ["tenantctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
