#!/usr/bin/env bash
# The serving release record, kept in gs://$BUCKET/releases/ (bucket versioning keeps every
# earlier value), and the one way the RayService is applied:
#
#   k8s/release.sh show             what is recorded: image tag, primary, shadow, previous
#   k8s/release.sh image TAG        record a new image tag and apply (a blue-green cluster swap)
#   k8s/release.sh primary URI      the first model, before anything serves (later ones go
#                                   through shadow, then promote)
#   k8s/release.sh shadow URI [FRACTION]
#                                   load the model at URI as the Shadow and mirror FRACTION
#                                   (0 < FRACTION <= 1, default SHADOW_FRACTION_DEFAULT) of
#                                   live /predict traffic to it; apply
#   k8s/release.sh promote          the shadow becomes the primary (the old one is kept as
#                                   previous), the shadow slot empties and the fraction
#                                   returns to SHADOW_FRACTION_IDLE; apply
#   k8s/release.sh rollback         the previous primary comes back, the fraction returns to
#                                   SHADOW_FRACTION_IDLE; apply
#   k8s/release.sh clear-shadow     stop mirroring (fraction SHADOW_FRACTION_IDLE); apply
#   k8s/release.sh apply            render k8s/rayservice.yaml from the record and apply it
#
# Needs BUCKET, PROJECT_ID, REGION and REDIS_HOST in the environment, gcloud and kubectl logged in,
# and envsubst. Model and fraction changes only touch serveConfigV2 user_config, so KubeRay
# applies them in place: replicas load the new checkpoint, then switch (no restart, no
# dropped request). With no shadow model recorded, the fraction applied is always the idle one.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${BUCKET:?set BUCKET (terraform output -raw bucket_name)}"
: "${PROJECT_ID:?set PROJECT_ID}"
: "${REGION:?set REGION}"
: "${REDIS_HOST:?set REDIS_HOST (terraform output -raw redis_host): the GCS store}"
RECORD="gs://${BUCKET}/releases"
SHADOW_FRACTION_DEFAULT=${SHADOW_FRACTION_DEFAULT:-0.1}  # `shadow URI` without a FRACTION
SHADOW_FRACTION_IDLE=${SHADOW_FRACTION_IDLE:-0.0}  # no shadow, or after promote / rollback

read_slot() {  # the recorded value of a slot, empty when none
  gcloud storage cat "${RECORD}/$1" 2>/dev/null || true
}

write_slot() {  # write_slot NAME VALUE (an empty VALUE empties the slot)
  printf '%s' "$2" | gcloud storage cp - "${RECORD}/$1" --quiet
}

require_object() {
  if ! gcloud storage ls "$1" >/dev/null 2>&1; then
    echo "k8s/release.sh: $1 does not exist" >&2
    exit 1
  fi
}

check_fraction() {  # a decimal number in (0, 1]
  if ! awk -v f="$1" 'BEGIN { exit !(f ~ /^([0-9]+[.]?[0-9]*|[.][0-9]+)$/ && f > 0 && f <= 1) }'; then
    echo "k8s/release.sh: FRACTION must be a number in (0, 1], not '$1'" >&2
    exit 2
  fi
}

apply() {  # apply [--if-complete]: with it, an incomplete record is not an error
  IMAGE_TAG=$(read_slot image_tag)
  MODEL_URI=$(read_slot primary)
  SHADOW_MODEL_URI=$(read_slot shadow)
  SHADOW_FRACTION=$SHADOW_FRACTION_IDLE
  if [[ -n $SHADOW_MODEL_URI ]]; then
    SHADOW_FRACTION=$(read_slot shadow_fraction)
    SHADOW_FRACTION=${SHADOW_FRACTION:-$SHADOW_FRACTION_DEFAULT}
  fi
  if [[ -z $IMAGE_TAG || -z $MODEL_URI ]]; then
    echo "k8s/release.sh: nothing applied: the record needs an image tag and a primary model" >&2
    [[ ${1:-} == --if-complete ]] && return 0
    exit 1
  fi
  export IMAGE_TAG MODEL_URI SHADOW_MODEL_URI SHADOW_FRACTION
  k8s/render.sh k8s/rayservice.yaml | kubectl apply -f -
  echo "applied: image ${IMAGE_TAG}, primary ${MODEL_URI}," \
    "shadow ${SHADOW_MODEL_URI:-none} (fraction ${SHADOW_FRACTION})"
}

command=${1:-}
case $command in
  show)
    for slot in image_tag primary shadow shadow_fraction previous; do
      printf '%-10s %s\n' "$slot" "$(read_slot "$slot")"
    done
    ;;
  image)
    write_slot image_tag "${2:?usage: k8s/release.sh image TAG}"
    apply --if-complete
    ;;
  primary)  # first deployment only: later models go through shadow + promote
    require_object "${2:?usage: k8s/release.sh primary URI}"
    write_slot primary "$2"
    apply --if-complete
    ;;
  shadow)
    fraction=${3:-$SHADOW_FRACTION_DEFAULT}
    check_fraction "$fraction"
    require_object "${2:?usage: k8s/release.sh shadow URI [FRACTION]}"
    write_slot shadow "$2"
    write_slot shadow_fraction "$fraction"
    apply
    ;;
  promote)
    shadow=$(read_slot shadow)
    [[ -n $shadow ]] || { echo "k8s/release.sh: no shadow model to promote" >&2; exit 1; }
    write_slot previous "$(read_slot primary)"
    write_slot primary "$shadow"
    write_slot shadow ""
    write_slot shadow_fraction "$SHADOW_FRACTION_IDLE"
    apply
    ;;
  rollback)
    previous=$(read_slot previous)
    [[ -n $previous ]] || { echo "k8s/release.sh: no previous primary recorded" >&2; exit 1; }
    write_slot primary "$previous"
    write_slot previous ""
    write_slot shadow_fraction "$SHADOW_FRACTION_IDLE"
    apply
    ;;
  clear-shadow)
    write_slot shadow ""
    write_slot shadow_fraction "$SHADOW_FRACTION_IDLE"
    apply
    ;;
  apply)
    apply
    ;;
  *)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
