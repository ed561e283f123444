"""Rows and their CSV: ``record`` (the queued unit and the correlation columns), ``snapshot`` (collect()'s input
as rows), ``csv_encoding`` (records → CSV text), ``csv_scanning`` (row ends in CSV bytes)."""
