# Sourced by the other scripts: dependency check and the number of build jobs.

# lola_require_packages PKG...: installs missing Debian packages when run as root, otherwise prints
# the exact apt-get line and exits.
lola_require_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "lola needs these Debian packages (or their equivalents): ${missing[*]}" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "lola needs packages that are not installed. Run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

LOLA_JOBS=${LOLA_JOBS:-$(nproc 2>/dev/null || echo 2)}
