"""``svd``: training-free low-rank factorization (``config.py`` torch-free, ``method.py`` torch)."""
