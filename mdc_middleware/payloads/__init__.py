"""What bodies hold: schemas of inputs and predictions, media, and the fields never kept."""
