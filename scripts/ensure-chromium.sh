# Sourced by `make test`: the browser test drives Debian's headless Chromium and its ChromeDriver.
# Installs the Debian packages chromium and chromium-driver when they are missing.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "Chromium for the browser test is not installed: installing the Debian packages chromium, chromium-driver"
  ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} apt-get update -qq
  ${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi
