"""What the factorization methods (``svd``, ``lillama``) share: parameters and planning
(``config.py``, torch-free), SVD factors (``factors.py``) and the method base (``method.py``).
Not a method itself: it registers nothing."""
