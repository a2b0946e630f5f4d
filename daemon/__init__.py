"""trainctl's working half: the daemon, curation, training and the batch benchmark.

Nothing here imports torch or transformers at module level; the functions that need them import them.
"""

__version__ = "0.1.0"
