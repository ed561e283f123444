"""Reading collected data back: the same layout from the local sink or a blob container."""
from .read import inventory, list_data_files, read_collected
from .source import open_source

__all__ = ["inventory", "list_data_files", "open_source", "read_collected"]
