"""Python packaging for the venv install (`pip install -e .`); metadata lives in setup.cfg.

On a ROS install the package is built by colcon through CMakeLists.txt (ament_cmake), which
installs this same Python package next to the generated interfaces.
"""
from setuptools import setup

setup()
