"""The contract shared by index_builder and worker.

Events, manifest, storage layout, topics, Redis keys, settings and the vector math.

Nothing in here imports either side.
"""
