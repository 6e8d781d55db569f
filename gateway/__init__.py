"""Online serving for HTTP clients: `annrec gateway` turns HTTP requests into request events and
answers with their replies (one reply-topic consumer per replica, routing by request_id), reads
replies from Redis, streams replies as Server-Sent Events, and serves the explorer page."""
