"""Online half: consume requests from Kafka, answer from the newest index, write Redis + replies."""
