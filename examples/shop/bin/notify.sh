#!/bin/sh
# One script for start, success and failure: JUNCTURE_PHASE says which.
case "$JUNCTURE_PHASE" in
  deploy:failed) echo "notify: $JUNCTURE_APP $JUNCTURE_VERSION FAILED in $JUNCTURE_ERROR_PHASE: $JUNCTURE_ERROR" ;;
  *)             echo "notify: $JUNCTURE_APP $JUNCTURE_STAGE reached $JUNCTURE_PHASE (release $JUNCTURE_RELEASE)" ;;
esac
