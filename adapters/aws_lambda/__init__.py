"""AWS Lambda entrypoints: connect, disconnect, router, processor, sweeper (each
`handler(event, context)`), over one per-container runtime (`runtime.py`)."""
