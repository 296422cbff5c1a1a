"""Local (block-wise) feature distillation used by the ``lillama`` method."""
