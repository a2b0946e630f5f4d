"""The service: the daemon's loop, the inbox watcher, the queue's control commands, the notices,
the worker a job runs in, and running the daemon in the background."""
