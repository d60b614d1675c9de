"""Data: the DataModule and its sources, the generated tasks, batching, and how documents become inputs."""
