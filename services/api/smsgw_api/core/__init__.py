"""Infrastructure every other layer stands on: settings, the process's
resources (database, broker, Redis), errors, authentication, request
plumbing, group commit, rate limits, metrics. Knows nothing of routes,
the pipeline or Socket.IO (.importlinter)."""
