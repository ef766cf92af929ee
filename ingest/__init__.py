"""The ingester: transcodes media files once into their channels' house format (issue 13)."""
