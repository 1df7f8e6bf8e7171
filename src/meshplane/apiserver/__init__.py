"""The Kubernetes-compatible HTTP API (what kubectl and client libraries speak) and the management API."""
