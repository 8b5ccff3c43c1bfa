"""Market-data sources that produce rows of the replay store's ``bars`` table."""
