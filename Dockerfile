# One image for every service of ours: workers, beat, flower, metrics, the API, migrations and the
# sandbox.
#
# The base image is pinned by its exact tag (Python patch release and Debian release). Pin its
# digest as well where a registry can be asked for it (`docker buildx imagetools inspect
# python:3.11.11-slim-bookworm`, then `FROM python:3.11.11-slim-bookworm@sha256:…`): the tag was
# chosen where no image registry could be reached, so no digest was read and checked.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EINVOICE_HOME=/var/lib/einvoice

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them: exactly the locked versions,
# each file checked against its hash.
COPY requirements/lock.txt requirements/lock.txt
RUN pip install --require-hashes -r requirements/lock.txt

COPY pyproject.toml README.md ./

COPY alembic.ini ./
COPY migrations migrations
COPY models models
COPY providers providers
COPY tasks tasks
COPY sandbox sandbox
COPY worker worker
# The project alone: its dependencies are the locked ones above.
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
