"""Code shared by the service's three process roles: config, wire protocol, logging, child set-up."""

__version__ = "0.1.0"
