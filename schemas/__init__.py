"""The contract index_builder, worker and their clients share: events, the index manifest, the
storage layout, topic names, Redis keys and settings. Data only: nothing in here imports any other
package of the project."""
