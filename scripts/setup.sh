#!/usr/bin/env bash
# Installs every build and test dependency of jobhost from Debian 12 packages.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libboost-dev libboost-filesystem-dev
  libpqxx-dev libpq-dev libhiredis-dev libyaml-cpp-dev nlohmann-json3-dev
  libspdlog-dev libfmt-dev catch2 libcurl4-openssl-dev libcpp-httplib-dev
  libssl-dev libcli11-dev
  python3-dkim  # the independent DKIM verifier of email_send's signing tests
  postgresql-15 postgresql-contrib redis-server redis-tools
  prometheus  # promtool: checks the /metrics output, checks and unit-tests docs/deploy/alerts.yml
  pgbouncer  # the PgBouncer test: jobhost through a real pooler in transaction mode
  postgresql-client  # psql, which reads PgBouncer's console in that test
  chromium  # the dashboard's browser test, driven by playwright-core from npm
  libreoffice-calc-nogui  # import_contacts' test saves a real spreadsheet as Windows-1252 CSV
  exim4-daemon-light  # bounce_process' test: a real Exim on a loopback port bounces into a Maildir
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js and npm may come from elsewhere than Debian (e.g. NodeSource, whose
# nodejs conflicts with Debian's npm): only a machine without them gets Debian's.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packages from starting system-wide services: jobhost
  # starts its own PostgreSQL and Redis on loopback with data under the project.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
