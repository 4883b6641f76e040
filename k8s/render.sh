#!/usr/bin/env bash
# Prints a k8s/ manifest with its ${NAME} placeholders filled in from the environment:
#   k8s/render.sh k8s/rayservice.yaml | kubectl apply -f -
# Only the names in PLACEHOLDERS are replaced, so any other `$` is left alone. A placeholder
# whose variable is unset stops the script, naming it; an unknown placeholder does too.
# SHADOW_MODEL_URI may be set and empty: the Shadow then has no model and mirrors nothing.
set -euo pipefail

PLACEHOLDERS=(PROJECT_ID REGION IMAGE_TAG BUCKET MODEL_URI SHADOW_MODEL_URI SHADOW_FRACTION RUN_NAME
  DOMAIN REDIS_HOST)

if [[ $# -ne 1 || ! -f $1 ]]; then
  echo "usage: k8s/render.sh MANIFEST" >&2
  exit 2
fi
manifest=$1

# shellcheck disable=SC2016  # the pattern is a literal ${NAME}, not an expansion
while read -r found; do
  name=${found:2:-1}
  if [[ " ${PLACEHOLDERS[*]} " != *" $name "* ]]; then
    echo "k8s/render.sh: $manifest has an unknown placeholder $found" >&2
    exit 1
  fi
done < <(grep -o '\${[A-Za-z_][A-Za-z0-9_]*}' "$manifest" | sort -u)

used=()
for name in "${PLACEHOLDERS[@]}"; do
  if grep -qF "\${$name}" "$manifest"; then
    if [[ -z ${!name+set} ]]; then
      echo "k8s/render.sh: $manifest needs $name in the environment" >&2
      exit 1
    fi
    export "${name?}"
    used+=("\${$name}")
  fi
done

if [[ ${#used[@]} -eq 0 ]]; then
  cat "$manifest"
else
  envsubst "${used[*]}" <"$manifest"
fi
