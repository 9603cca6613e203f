"""Replica bounds, declared once: the scenario models, the autoscaler spec, the run's
platform check and the deployers' pools all read them from here."""

MAX_REPLICAS = 2000  # the sim platform's bound (a model, not processes)
REAL_PLATFORM_MAX_REPLICAS = 50  # docker and local: real processes on one machine
