#!/usr/bin/env python3
import os

print(f"{os.environ['JUNCTURE_PROJECT']} is ready to start (a Python hook)")
