"""Webhooks: per-job and per-tenant endpoints, signing secrets, and the delivery log."""
