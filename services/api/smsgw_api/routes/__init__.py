"""HTTP only: one blueprint per resource. Each module parses a request, calls
core/domain, and shapes the answer."""
