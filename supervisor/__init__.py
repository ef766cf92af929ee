"""The supervisor: the service's main process, parent and reaper of all the others."""
