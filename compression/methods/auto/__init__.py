"""``auto``: try the pipelines the constraints allow, keep the one that follows the teacher best
(``config.py`` torch-free, ``method.py`` torch)."""
