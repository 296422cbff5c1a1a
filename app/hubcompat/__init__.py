"""A read-only Hugging Face Hub API over job artifacts: ``hf download``, ``snapshot_download``
and ``from_pretrained`` fetch ``<tenant>/<job id>`` from this service with the API key as token."""
