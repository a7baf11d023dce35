"""The Actionable Segmentation Engine: customer events in, actionable segments out.

The Dagster definitions live in `segmentation_pipeline.definitions`; importing
this package (or `segmentation_pipeline.core`) does not import Dagster.
"""
