"""`python -m sample_app`: the sample app under test (configuration: `sample_app.config`)."""

from sample_app.server import main

if __name__ == "__main__":
    raise SystemExit(main())
