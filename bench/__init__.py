"""stealbench: a harness for defenses against model-stealing attacks."""
__version__ = "0.1.0"
