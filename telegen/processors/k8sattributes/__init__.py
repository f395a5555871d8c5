"""Processor ``k8sattributes``: Kubernetes pod metadata on profiles (as the Collector's)."""
