"""The on-device browser page (``edgeser web``): static files and the server that hands
them out with an exported model."""
