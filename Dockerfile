# syntax=docker/dockerfile:1
# One image for every iotsec command: the operator (`iotsec run`), the webhook (`iotsec webhook`), the CLI, and
# the backup jobs (restic is included). Build: docker build -t registry.example.com/iotsec/iotsec:0.1.0 .

# ---- build: wheels for iotsec and its dependencies (compilers stay in this stage)
FROM python:3.11.14-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime: the wheels, restic, a non-root user; no compilers, no pip cache
FROM python:3.11.14-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends restic ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 iotsec \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin iotsec
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels iotsec && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["iotsec"]
CMD ["--help"]
