#!/bin/sh
# A name with a dot: run-parts would skip it silently; juncture runs it.
echo "applying migrations for $JUNCTURE_PROJECT"
