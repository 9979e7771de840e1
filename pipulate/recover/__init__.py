"""Recovery: bring lost notebook code back from wherever it still exists.

- ``history``: IPython's history databases, always read through a private copy.
- ``live``: running kernels (a deleted history file they hold open, their in-memory history).
- ``checkpoints``: Jupyter's ``.ipynb_checkpoints`` copies that differ from their notebook.
- ``versions``: every saved version of every notebook (a Jupyter post-save hook).
- ``match``: which history sessions belong to a notebook.
- ``export``: sessions to a notebook (.ipynb) or a percent script (.py).
- ``cli``: ``pipulate recover ...``.
"""
