"""The domain of the segmentation engine, in plain Python.

Nothing below this package imports dagster: every function here can be used
from a notebook or a script.
"""
