# telegen as a privileged sidecar / DaemonSet container.
#   docker build -t telegen .
#   docker run --rm --privileged --pid=host \
#     -v /sys/kernel/debug:/sys/kernel/debug -v /lib/modules:/lib/modules:ro \
#     -v /usr/src:/usr/src:ro -v $PWD/profiles:/profiles \
#     -v telegen-cache:/var/cache/telegen telegen run -c /etc/telegen/config.yaml
# The cache volume keeps CFI unwind tables (built once per binary: libc ~0.7 s
# of CPU, libjvm ~8 s) and debuginfod downloads across restarts.
FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
WORKDIR /opt/telegen
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv make ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/setup-host.sh scripts/setup-host.sh
RUN bash scripts/setup-host.sh --runtime && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make install PYTHON=/usr/bin/python3 SETUP_ARGS=--runtime && rm -rf /root/.cache
COPY config-examples/production.yaml /etc/telegen/config.yaml
VOLUME /var/cache/telegen
# Kernel-header links and tracefs depend on the host kernel: made at start.
ENTRYPOINT ["/opt/telegen/scripts/docker-entrypoint.sh"]
CMD ["run", "-c", "/etc/telegen/config.yaml"]
