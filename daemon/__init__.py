"""trainctl's working half: the daemon, curation, training and the batch benchmark.

Nothing here imports torch or transformers at module level; the functions that need them import
them.
"""

__version__ = "0.1.0"

from daemon.parent_death import adopt_if_asked as _adopt_if_asked

# a process an engine spawned under spawning_engine_children dies with its parent
_adopt_if_asked()
