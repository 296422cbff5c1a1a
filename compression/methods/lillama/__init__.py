"""``lillama``: factorization trained block by block (``config.py`` torch-free, ``method.py``
torch)."""
