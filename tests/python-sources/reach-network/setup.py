# Reaches the network while building, as a setup script that downloads
# something would. The sandbox must refuse it.
import urllib.request

from setuptools import setup

urllib.request.urlopen("https://pypi.org/simple/", timeout=20).read()

setup(name="caisson-reach-network", version="1.0", py_modules=[])
