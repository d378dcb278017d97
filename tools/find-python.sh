#!/bin/sh
# Prints the best Python for django-crmify: 3.12+ (Django 6.1) if one works, else 3.11 (Django 5.2).
# Tries the usual names on PATH, then pyenv's installed versions (whose bare shims may not answer).
ok() { "$1" -c "import sys, venv; sys.exit(sys.version_info < ($2))" >/dev/null 2>&1; }
for minimum in "3, 12" "3, 11"; do
  for candidate in python3.14 python3.13 python3.12 python3 python python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && ok "$candidate" "$minimum"; then
      command -v "$candidate"; exit 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -t. -k2,2nr -k3,3nr); do
      candidate="$(pyenv prefix "$version" 2>/dev/null)/bin/python3"
      if [ -x "$candidate" ] && ok "$candidate" "$minimum"; then echo "$candidate"; exit 0; fi
    done
  fi
done
echo "django-crmify needs Python 3.11 or newer; none was found." >&2
exit 1
