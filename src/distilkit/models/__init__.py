"""Models: folders and hub ids (torch-free), loading and saving, the family table, student construction, pooling."""
