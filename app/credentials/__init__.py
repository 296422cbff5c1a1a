"""Per-tenant credentials for outside services (the Hugging Face Hub), encrypted at rest."""
