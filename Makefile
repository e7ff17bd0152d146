# The two commands the README names: `make demo` and `make test`. Both set up .venv first;
# setup is idempotent and reruns only when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup browser proxy postgres demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch + torchvision first, in one call: the only pair that imports together here.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[vision,mujoco,ui,games,robot,test,postgresql]"
	# imitation 1.0.1 pins gymnasium~=0.29 and stable-baselines3~=2.2.1, older than our stack;
	# its data types and reward wrappers import and run on ours, so install it without deps.
	$(PIP) install -q --no-deps imitation==1.0.1
	touch $(STAMP)

demo: setup
	$(VENV)/bin/embodied-pref demo

# Browser tests drive Debian's chromium (never a browser download).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The labeling app's reverse-proxy test runs Debian's nginx.
proxy:
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

# The store's, queue's and labeling app's durability tests also run on a throwaway cluster of
# Debian's postgresql (started by the tests themselves, on a unix socket).
postgres:
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# Two workers, a test file each at a time: module fixtures are built once, and the cores are
# kept busy while one file waits on a browser, a server or a subprocess.
test: setup browser proxy postgres
	$(PY) -m pytest -q -n 2 --dist loadfile

# Every bench/*.py at its full size, in sorted order; stops at the first that fails.
bench: setup
	set -e; for script in $(sort $(wildcard bench/*.py)); do echo "== $$script"; $(PY) $$script; done

clean:
	rm -rf $(VENV) runs
