FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Noto CJK: Prometheus graphs titled in Japanese, Chinese or Korean render their glyphs.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, from the lock alone (its header says how to regenerate it): every package
# pinned and hash-checked, nothing resolved at build time; this layer is reused while the lock is unchanged.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY integrations ./integrations
# The project itself adds no package: --no-deps, and the locked setuptools builds it (no build isolation
# that would fetch an unpinned one).
RUN pip install --no-deps --no-build-isolation . \
    && groupadd --system --gid 10001 oncall \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --create-home oncall

# Numeric, so that Kubernetes' runAsNonRoot can check it (deploy/deployment.yaml runs as 10001 too).
USER 10001
WORKDIR /data
# The embedded default keeps its SQLite file in /data; mount a volume there, or set DATABASE_URL
# (deploy/ sets it: replicas share PostgreSQL).
ENV DATABASE_URL=sqlite:////data/oncall.db
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2)" || exit 1
ENTRYPOINT ["oncall-bot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]
