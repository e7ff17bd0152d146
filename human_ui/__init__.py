"""The clip-comparison labeling web app (server and static page); it depends on the dataset
store only."""
