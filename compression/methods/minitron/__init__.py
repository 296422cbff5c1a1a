"""``minitron``: structured pruning (``config.py`` torch-free, ``method.py`` torch)."""
