"""Resource limits: per-tenant quotas (jobs at once, jobs per day, model size), the request
rate limit and the request body size limit."""
