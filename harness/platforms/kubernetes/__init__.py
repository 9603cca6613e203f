"""The `kubernetes` platform: replicas as pods on a Kubernetes cluster (raw API client)."""
