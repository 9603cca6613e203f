"""The sample app under test: an HTTP service with a virtual capacity (docs/architecture.md, "The
sample app's capacity model"). Run it with `python -m sample_app`; its environment
variables are documented in `sample_app.config`, its routes in `sample_app.app`, its
metrics in `sample_app.metrics`. Needs only the standard library and prometheus_client.
"""
