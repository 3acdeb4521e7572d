"""Data preparation: shard writing, dataset layouts, decoding and the clip stream."""
