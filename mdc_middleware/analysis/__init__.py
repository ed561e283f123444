"""Reading collected data back: the same layout from the local sink or a blob container."""
from .read import list_data_files, read_collected

__all__ = ["list_data_files", "read_collected"]
