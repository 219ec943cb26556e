"""One module per scenario; each records its metrics into the shared `Results`."""
