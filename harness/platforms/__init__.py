"""One folder per platform: its deployers, faults and adapters (docs/architecture.md,
"Layers and where to add things"). What all platforms share stays in harness/deploy/
(the Deployer protocol, the registry, the HAProxy and Prometheus adapters, the watcher)."""
