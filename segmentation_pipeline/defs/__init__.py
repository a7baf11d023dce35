"""The Dagster layer: thin wrappers that load, call `core`, write and attach metadata."""
