"""The running system: settings, logging, the local broker, topics, faust app, collector, CLI."""
