# The Streamer emulator: API Gateway WebSocket + stream processing in one process.
# Built by docker-compose.yml, which runs it twice: as the emulator, pointed at the
# `moto` service, and as that service (`python -m adapters.moto_server`: the same
# local DynamoDB `make run` embeds, whose conditional writes are atomic).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin streamer
WORKDIR /app

# Only the installable parts of the repository (see .dockerignore).
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY adapters ./adapters
COPY emulator ./emulator
RUN pip install '.[local]' \
    && install -d -o streamer -g streamer -m 700 /home/streamer/.streamer

USER streamer
WORKDIR /home/streamer

# Inside a container the servers must listen on every interface, or the
# published ports reach nothing; outside Docker the default stays 127.0.0.1.
ENV EMULATOR_HOST=0.0.0.0 \
    EMULATOR_STATE_DIR=/home/streamer/.streamer \
    DYNAMODB_ENDPOINT_URL=http://moto:5000 \
    AWS_REGION=us-east-1

EXPOSE 3001 3002

HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3002/health', timeout=2)"]

CMD ["streamer-emulator", "--host", "0.0.0.0", "--dynamodb-endpoint", "http://moto:5000"]
