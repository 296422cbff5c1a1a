"""Structured pruning (Minitron): importance, shape search and homogeneous width/depth cuts."""
