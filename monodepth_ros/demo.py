"""`make demo`: the main job on the embedded default model (filled in as the parts land)."""

import sys


def main() -> int:
    print("monodepth_ros demo: the end-to-end demo (synthetic bag -> depth node over DDS -> metrics, output bag "
          "and report) arrives with the node and replay issues. Nothing else to run yet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
