# Writes outside its build directory while building. The sandbox must refuse
# it; the test checks the file never appears.
import os

from setuptools import setup

os.makedirs("/var/tmp", exist_ok=True)
with open("/var/tmp/caisson-source-build-escape", "w") as f:
    f.write("escaped")

setup(name="caisson-write-outside", version="1.0", py_modules=[])
