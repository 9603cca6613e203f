"""The local platform: replicas, HAProxy and Prometheus as host processes."""
