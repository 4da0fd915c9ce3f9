"""The managed (lifecycle) depth node: the node of :mod:`monodepth_ros.depth_node`, started and stopped through the
ROS 2 node lifecycle by a lifecycle manager (e.g. nav2_lifecycle_manager) or ``ros2 lifecycle set``.

    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive --cleanup--> unconfigured
    unconfigured | inactive | active --shutdown--> finalized

- configure: reads and checks every parameter, loads the model (backend + scale policy) and creates the output
  publishers (lifecycle publishers: silent until activated). A bad parameter or an unusable model returns FAILURE
  with the reason logged and shown in /diagnostics; the node stays unconfigured. Fix the parameter (``ros2 param
  set``: the "restart" parameters such as ``model_path`` may change while the node is unconfigured) and configure
  again.
- activate: starts the inference worker and subscribes to ``image`` (or ``image/compressed``) and ``camera_info``.
- deactivate: unsubscribes, drops the frame still waiting and waits for the frame in progress: once it returns,
  nothing more is published and the worker is gone.
- cleanup: destroys the output publishers and releases the model and its backend.
- shutdown, from any of the three: releases everything; the process then stays in ``finalized`` until it is
  stopped (as rclcpp lifecycle nodes do).
- an exception inside a transition: on_error releases everything and the node returns to unconfigured.

``/diagnostics`` has its own (plain) publisher and reports in every state: ``lifecycle_state``, and the configure
error while unconfigured after a failed configure (level ERROR). Every other behaviour (topics, parameters, bad
input) is the plain node's: the processing core is :class:`monodepth_ros.depth_node.DepthNodeCore`.

Run: ``python -m monodepth_ros.managed_node --ros-args -p model_path:=m.onnx`` (console script
``depth_node_managed``), then ``ros2 lifecycle set /depth_node configure`` and ``ros2 lifecycle set /depth_node
activate``.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from monodepth_ros.depth_node import DepthNodeCore, ModelStartupError, run_node

__all__ = ["ManagedDepthNode", "main"]


class ManagedDepthNode(DepthNodeCore, LifecycleNode):
    """The depth node as a lifecycle node (see the module docstring). Construction declares the parameters and
    starts /diagnostics only; nothing is loaded before configure."""

    def __init__(self, node_name: str = "depth_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self._init_core(restart_params_read_only=False)  # they may change while unconfigured, see below
        self.get_logger().info("managed depth node unconfigured: configure loads the model, activate starts it")

    # ---- DepthNodeCore hooks ----------------------------------------------------------------------------------
    def _lifecycle_state(self) -> str:
        # rclpy (Jazzy and Kilted alike) has no public getter; read on the executor thread, never mid-transition.
        return self._state_machine.current_state[1]

    def _restart_param_reason(self, name: str) -> str | None:
        if self._lifecycle_state() == "unconfigured":
            return None  # taken at the next configure
        return (f"{name} can change only while the node is unconfigured: deactivate and clean it up, set "
                f"{name}, then configure again")

    def _teardown(self) -> None:
        """Everything configure and activate made, undone (idempotent)."""
        self._stop_input()
        self._destroy_outputs(self.destroy_lifecycle_publisher)
        self._release()

    # ---- transitions ------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_model()
        except Exception as e:  # noqa: BLE001 - reported, and the node stays unconfigured to be configured again
            self.configure_error = str(e) if isinstance(e, ModelStartupError) else f"{type(e).__name__}: {e}"
            self.get_logger().error(f"configure failed, staying unconfigured: {self.configure_error}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self._create_outputs(self.create_lifecycle_publisher)
        self.get_logger().info(f"configured (inactive): {self._model_line()}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enables the lifecycle publishers before the first frame can arrive
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        self._start_input()
        self.get_logger().info(f"active: subscribing {self._input_line()}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()  # the frame in progress is published before the publishers are disabled
        self.get_logger().info("inactive: unsubscribed, inference worker stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("cleaned up (unconfigured): model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info(f"shut down from {state.label} (finalized)")
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in a transition from {state.label}: everything released, unconfigured")
        self._teardown()
        return super().on_error(state)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``depth_node_managed`` (exit codes: :func:`monodepth_ros.depth_node.run_node`)."""
    return run_node(ManagedDepthNode, "depth_node_managed", argv)


if __name__ == "__main__":
    sys.exit(main())
