"""Imported by pytest before the test modules: fedteach first, so that TensorFlow starts with its settings
(quiet; see fedteach/__init__.py) whatever a test module imports first."""
import fedteach  # noqa: F401
