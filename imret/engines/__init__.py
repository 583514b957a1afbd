"""Extraction engines: how the descriptors of many images get computed.

'local' (the default) is the in-process loop of ``Index.build``; 'ray' spreads
shards of images over a Ray cluster (``imret.engines.ray_engine``).
"""
