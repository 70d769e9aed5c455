"""The study file.

`study.py` the Study model and its limits; `sample.py` parameters.sample; `loading.py`
reading a file with overrides; `readiness.py` what is checked on this machine before
anything starts; `policy.py` what a deployment's runs may use.
"""
