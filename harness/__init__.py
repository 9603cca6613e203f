"""harness: load-testing and autoscaling benchmark harness."""

__version__ = "0.1.0"
