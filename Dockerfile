# Minimal image for now; the packaging issue hardens it (pinned digest, multi-stage, restic).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["iotsec"]
CMD ["--help"]
