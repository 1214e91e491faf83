#!/usr/bin/env bash
# Set up everything curvechat needs on a fresh Debian machine: system packages
# (only those missing), a virtualenv in .venv, and the project with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the dashboard's browser tests; influxdb: the metrics push test;
# tmux: the terminal client's end-to-end test; etcd-server: the etcd store
# and the cluster tests; openssl: the certificates of the etcd TLS tests.
APT_PACKAGES=(chromium influxdb tmux etcd-server openssl)

need=()
# `venv` itself comes with Python; the pip it installs needs `ensurepip`,
# which Debian ships in python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  # On a host run by systemd, installing these starts etcd (port 2379) and
  # InfluxDB (8086) as services: the tests start their own, so the ones
  # installed here are stopped and disabled again.
  if [ -d /run/systemd/system ]; then
    for pair in etcd-server:etcd influxdb:influxdb; do
      pkg=${pair%%:*} unit=${pair##*:}
      if [[ " ${need[*]} " == *" $pkg "* ]]; then
        $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

# A .venv whose Python has no pip was left by a `python3 -m venv` that failed
# half-way (no ensurepip then): make it again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
