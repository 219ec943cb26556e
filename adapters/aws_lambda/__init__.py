"""AWS Lambda entrypoints: connect, disconnect, router, processor, sweeper (each
`handler(event, context)`), over one per-container runtime (`runtime.py`).

In a Lambda container (`AWS_LAMBDA_FUNCTION_NAME` is set) importing this package
pauses the garbage collector until the first invocation ends (`runtime.invoke`
resumes it): a cold start makes hundreds of thousands of objects that live as
long as the container and next to no garbage, and the collections it would run
meanwhile are ~8% of its CPU. The survivors are then frozen (`gc.freeze`), so
later collections never walk them.
"""

import gc
import os

COLD_START_PAUSED_GC = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and gc.isenabled()
"""Whether this import paused the collector (resumed after the first invocation)."""
if COLD_START_PAUSED_GC:
    gc.disable()
