"""Shared test set-up: the slow, obvious reference modules beside the tests (naive.py, reference.py,
optim_naive.py) are importable by name. pytest runs with --import-mode=importlib, which does not
put tests/ on sys.path by itself."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
