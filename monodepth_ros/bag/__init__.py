"""Rosbag2 input and output for the replay evaluation and the trainer, one job per module.

- :mod:`monodepth_ros.bag.reader`: open a bag (directory, storage file or lone ``.mcap``), topic summaries, raw
  messages; every failure is a :class:`~monodepth_ros.bag.reader.BagError` listing the bag's topics.
- :mod:`monodepth_ros.bag.frames`: camera frames with their camera_info and matched ground truth
  (:func:`~monodepth_ros.bag.frames.iter_frames`).
- :mod:`monodepth_ros.bag.writer`: the replay's output bag.
- :mod:`monodepth_ros.bag.msgtypes`: the message type names.

Message decoding lives in :mod:`monodepth_ros.msgs`. Nothing is imported here: import from the submodules.
"""
