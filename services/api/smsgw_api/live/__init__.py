"""Socket.IO for browsers: connecting, authorising and re-checking sockets."""
