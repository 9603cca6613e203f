"""The docker platform: manual (`docker run`), compose and orchestrated (Swarm) deployers,
their readiness prober, faults, images and registry (harness/platforms/docker/DOCKER.md)."""
