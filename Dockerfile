# clearml-chatops: the Slack bot (`clearml-chatops serve`), Socket Mode by default.
#
#   docker build -t clearml-chatops .
#   docker run -d --name clearml-chatops \
#     -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN \
#     -e CLEARML_API_HOST -e CLEARML_API_ACCESS_KEY -e CLEARML_API_SECRET_KEY \
#     -v clearml-chatops-data:/data clearml-chatops
#
# HTTP mode instead: `... -e SLACK_SIGNING_SECRET -p 3000:3000 clearml-chatops serve --http`.
# Details, a config file and a Kubernetes example: docs/slack.md.

# --- build: install the project and its dependencies into /install --------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bot ./bot
# the shipped playbooks are installed into the package (bot/playbooks): the fallback when /app/playbooks is absent
COPY playbooks ./playbooks
# the `charts` extra (matplotlib): PNG charts in digest and incident threads; without it trends are text only
RUN pip install --prefix=/install '.[charts]'

# --- runtime ----------------------------------------------------------------------------------------------------
FROM python:3.11-slim
# The store defaults to $XDG_STATE_HOME/clearml-chatops/store.db: /data is the volume that keeps it (runs, and later
# incidents, audit and the outbox) across restarts. PORT serves /healthz in both modes and /slack/events with --http.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/data \
    PORT=3000
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin chatops \
    && mkdir -p /data /app \
    && chown chatops:chatops /data
COPY --from=build /install /usr/local
WORKDIR /app
# The shipped playbooks come with the package; mount your own directory at /app/playbooks (it then replaces them)
# or pass --playbooks DIR. `clearml-chatops playbooks` says which are in use and where they came from.
COPY manifest.yml ./
USER chatops
VOLUME ["/data"]
EXPOSE 3000
# 200 only when the Slack connection is up (Socket Mode connected / auth.test ok) and the store is writable.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.slack.healthcheck"]
ENTRYPOINT ["clearml-chatops"]
CMD ["serve"]
