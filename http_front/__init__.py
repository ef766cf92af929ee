"""The HTTP front: one selectors loop that serves every viewer of every channel."""
