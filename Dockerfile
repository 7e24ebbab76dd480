# One image for every service of ours: workers, beat, flower, metrics, migrations and the sandbox.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EINVOICE_HOME=/var/lib/einvoice

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p worker tasks models providers sandbox migrations \
    && pip install . \
    && pip uninstall -y einvoice-worker

COPY alembic.ini ./
COPY migrations migrations
COPY models models
COPY providers providers
COPY tasks tasks
COPY sandbox sandbox
COPY worker worker
RUN pip install --no-deps .

# Not root; the data folder (archive, beat schedule, metrics files) is a volume owned by this user.
# The folders exist in the image so that a new named volume starts with them and their owner.
RUN useradd --system --uid 10001 --home-dir /var/lib/einvoice einvoice \
    && mkdir -p /var/lib/einvoice/archive /var/lib/einvoice/beat /var/lib/einvoice/metrics \
    && chown -R einvoice /var/lib/einvoice
USER einvoice
VOLUME ["/var/lib/einvoice"]

# `alembic upgrade head` runs from here (alembic.ini and migrations/ are in /app).
CMD ["celery", "-A", "worker.app", "worker", "--loglevel", "INFO"]
