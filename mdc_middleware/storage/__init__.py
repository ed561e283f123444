"""Where batches end up: the local folder or Azure Blob Storage, in one layout."""
