# syntax=docker/dockerfile:1
# Build wheels in one stage, run as an unprivileged user in a slim one.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY migrations ./migrations
USER app
# Required: TENANTS_DATABASE_URL (a role with CREATEDB and CREATEROLE). The embedded database is for laptops.
ENV TENANTS_MIGRATIONS_DIR=/app/migrations \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["tenantctl", "serve", "--host", "0.0.0.0", "--port", "8000"]
