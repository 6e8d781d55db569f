"""I/O both sides share: Kafka topics and the item-updates log, object storage, and index files
(loading and verifying Annoy files and arrays). The contract it moves is schemas/."""
