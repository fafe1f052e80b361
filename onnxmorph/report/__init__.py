"""Reports of a prune: the JSON report dict (`build.py`) and what renders it for people."""
