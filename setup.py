# The import package `smf` lives in services/; setuptools' find_packages does not rename it, so list it here
# (editable and wheel installs then import the same way).
from setuptools import find_packages, setup

setup(
    package_dir={"smf": "services"},
    packages=["smf"] + ["smf." + p for p in find_packages("services")],
    package_data={"smf": ["py.typed", "*/web/*", "*/configs/*.json", "rnn/fastgen/*.cpp"]},
)
