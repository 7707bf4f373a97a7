"""What shows and evaluates leadflow without real traffic.

The simulator, ``leadflow demo``, the instrumented landing site and the offline model
evaluation. Nothing here runs in production; ``streams/`` never imports it.
"""
