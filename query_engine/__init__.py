"""The query engine shared by builder and worker: vectors, norm bands, filters, the serving plan.

Pure numpy and Annoy over arrays already in memory: no Kafka, Redis or files. The builder
measures with it (the quality report) and the worker answers with it, so the figures in a
manifest are those of the code that serves.
"""
