"""monodepth_training: the offline self-supervised trainer and exporter (installed as ``monodepth_training``).

It depends on the runtime package ``monodepth_ros`` (geometry, metrics, bundle format); the runtime never
imports it.
"""
