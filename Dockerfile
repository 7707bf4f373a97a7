# The leadflow application image: collector, workers and projector share it.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY leadflow ./leadflow
COPY streams ./streams
COPY schemas ./schemas
COPY processors ./processors
COPY sinks ./sinks
COPY infra ./infra
COPY cli ./cli
COPY demo ./demo
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/leadflow leadflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER leadflow
WORKDIR /var/lib/leadflow
ENV LEADFLOW_DATA_DIR=/var/lib/leadflow LEADFLOW_LOG_FORMAT=json
EXPOSE 8088 6066
ENTRYPOINT []
CMD ["leadflow", "--help"]
