"""Prefect flows of oldphoto (deployments in prefect.yaml)."""
