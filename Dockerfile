# One image, two process types (docs/guides/production.md): the gRPC server (the default
# command) and the web process (admin, REST and Connect under granian); the migration job
# runs `manage.py migrate`. The project lives in /app, its virtualenv in /app/.venv,
# so the commands are the docs': .venv/bin/python manage.py ...

# --- build: the virtualenv with the runtime requirements, and the static files
FROM python:3.11.7-slim-bookworm AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt ./
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir -r requirements.txt

COPY . ./
# Static files are collected at build time (compressed, with hashed names), so
# every container of a release serves the same files. The settings need a
# secret to load with DEBUG off; this one signs nothing.
RUN DEBUG=false SECRET_KEY=collectstatic-at-build-time-only-signs-nothing-0123456789 \
    STATIC_ROOT=/app/var/static /app/.venv/bin/python manage.py collectstatic --noinput

# --- runtime: the same files, run as an unprivileged user
FROM python:3.11.7-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    DEBUG=false \
    STATIC_ROOT=/app/var/static
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app
WORKDIR /app
COPY --from=build --chown=root:root /app /app
# The code stays read-only for the app user; only the file cache (used when CACHE_URL is unset) is its own.
RUN mkdir -p /app/var/cache && chown app:app /app/var/cache

USER 10001:10001
# gRPC, web (admin + REST), Prometheus metrics of the gRPC process.
EXPOSE 50051 8000 9100
CMD ["/app/.venv/bin/python", "manage.py", "grpcrunserver", "[::]:50051"]
