"""``python -m monodepth_ros.replay``: the ``monodepth-replay`` command."""

import sys

from monodepth_ros.replay.cli import main

sys.exit(main())
