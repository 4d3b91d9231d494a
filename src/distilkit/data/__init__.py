"""Data loading: GLUE tasks (glue_data TSVs or the hub) and the user's own labelled files."""
from .errors import DataError
from .files import load_table
from .glue import GLUE_TASKS, TaskSpec, default_glue_dir, get_task, load_glue_split

__all__ = ["DataError", "GLUE_TASKS", "TaskSpec", "default_glue_dir", "get_task", "load_glue_split", "load_table"]
